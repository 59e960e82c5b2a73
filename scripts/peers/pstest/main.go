// Command pstest runs Google's in-process Pub/Sub fake (cloud.google.com/go/pubsub/v2/pstest)
// as a standalone plaintext server for tests (PUBSUB_EMULATOR_HOST=<addr>). It speaks both
// protocols Google's clients use, on the one address it prints:
//
// gRPC: pstest itself listens on a private loopback port. Connections to the public address
// that open with the HTTP/2 client preface ("PRI * HTTP/2.0...") are proxied to it byte for byte.
//
// REST: every other connection is served by an HTTP/1.1 server implementing the Pub/Sub v1
// HTTP/JSON API by translating each call into the matching gRPC call on the private port (the
// Rust client google-cloud-pubsub uses REST for TopicAdmin and SubscriptionAdmin). Bodies are
// protojson; responses use enum numbers when `$alt` asks for `enum-encoding=int`. gRPC errors
// become Google's JSON error body with the HTTP status Google uses (NOT_FOUND 404,
// ALREADY_EXISTS 409, ...). Methods pstest does not implement (snapshots, modifyPushConfig) and
// unknown paths (schemas, IAM) answer 501 UNIMPLEMENTED.
//
//	pstest --addr 127.0.0.1:0
//
// The first line on stdout is always "listening HOST:PORT" (the real port when 0 was asked).
// SIGINT/SIGTERM shut it down cleanly (exit 0).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	pb "cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// version is the pstest module version this program is built against (see go.mod).
const version = "pubsub/v2 v2.9.0"

// h2Preface is the HTTP/2 client connection preface (RFC 9113 §3.4) that gRPC clients send first.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// maxBody bounds REST request bodies (Pub/Sub's publish limit is 10 MB; JSON/base64 inflates it).
const maxBody = 32 << 20

func start(addr string) (s *pstest.Server, err error) {
	// pstest panics when it cannot bind; turn that into an error.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	return pstest.NewServerWithAddress(addr), nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8085", "host:port to listen on (port 0 picks a free port)")
	minAck := flag.Duration("min-ack-deadline", 0, "override pstest's minimum ack deadline (default 10s)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version)
		return
	}
	if *minAck > 0 {
		pstest.SetMinAckDeadline(*minAck)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pstest: cannot listen on %s: %v\n", *addr, err)
		os.Exit(1)
	}
	s, err := start("127.0.0.1:0")
	if err != nil {
		fmt.Fprintf(os.Stderr, "pstest: cannot start the internal gRPC server: %v\n", err)
		os.Exit(1)
	}
	cc, err := grpc.NewClient(s.Addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxBody), grpc.MaxCallSendMsgSize(maxBody)))
	if err != nil {
		fmt.Fprintf(os.Stderr, "pstest: cannot connect to the internal gRPC server %s: %v\n", s.Addr, err)
		os.Exit(1)
	}
	f := newFront(ln, s.Addr, &api{pub: pb.NewPublisherClient(cc), sub: pb.NewSubscriberClient(cc)})
	go f.serve()
	fmt.Printf("listening %s\n", ln.Addr())
	os.Stdout.Sync()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	got := <-sig
	fmt.Fprintf(os.Stderr, "pstest: %v, shutting down\n", got)
	done := make(chan struct{})
	go func() {
		f.close()
		_ = cc.Close()
		_ = s.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		fmt.Fprintln(os.Stderr, "pstest: close timed out")
	}
}

// ---------------------------------------------------------------------------------------------
// Front listener: sniff each connection, proxy gRPC, hand HTTP/1.1 to the REST server.

type front struct {
	ln       net.Listener
	grpcAddr string
	rest     *http.Server
	restLn   *connListener

	mu      sync.Mutex
	closed  bool
	proxied map[net.Conn]struct{} // both ends of every proxied connection
	wg      sync.WaitGroup
}

func newFront(ln net.Listener, grpcAddr string, a *api) *front {
	return &front{
		ln:       ln,
		grpcAddr: grpcAddr,
		rest:     &http.Server{Handler: a, ReadHeaderTimeout: 30 * time.Second},
		restLn:   newConnListener(ln.Addr()),
		proxied:  map[net.Conn]struct{}{},
	}
}

func (f *front) serve() {
	go func() { _ = f.rest.Serve(f.restLn) }()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return // closed
		}
		go f.dispatch(c)
	}
}

// dispatch reads just enough of the first bytes to tell the HTTP/2 preface from an HTTP/1 request.
func (f *front) dispatch(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 0, len(h2Preface))
	isH2 := false
	for {
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if !strings.HasPrefix(h2Preface, string(buf)) {
			break // not the preface: HTTP/1.x
		}
		if len(buf) == len(h2Preface) {
			isH2 = true
			break
		}
		if err != nil {
			_ = c.Close() // closed or silent before we could tell
			return
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	pc := &prefixConn{Conn: c, r: io.MultiReader(bytes.NewReader(buf), c)}
	if isH2 {
		f.proxy(pc)
	} else {
		f.restLn.hand(pc)
	}
}

func (f *front) track(cs ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	for _, c := range cs {
		f.proxied[c] = struct{}{}
	}
	f.wg.Add(1)
	return true
}

func (f *front) untrack(cs ...net.Conn) {
	f.mu.Lock()
	for _, c := range cs {
		delete(f.proxied, c)
	}
	f.mu.Unlock()
	f.wg.Done()
}

// proxy copies bytes both ways between the client and pstest; when either side ends, both close.
func (f *front) proxy(client net.Conn) {
	backend, err := net.DialTimeout("tcp", f.grpcAddr, 10*time.Second)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pstest: dial internal gRPC %s: %v\n", f.grpcAddr, err)
		_ = client.Close()
		return
	}
	if !f.track(client, backend) {
		_ = client.Close()
		_ = backend.Close()
		return
	}
	defer f.untrack(client, backend)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		_ = dst.Close()
		_ = src.Close()
		done <- struct{}{}
	}
	go pipe(backend, client)
	go pipe(client, backend)
	<-done
	<-done
}

func (f *front) close() {
	_ = f.ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = f.rest.Shutdown(ctx) // also closes restLn
	cancel()
	_ = f.rest.Close()
	f.mu.Lock()
	f.closed = true
	for c := range f.proxied {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// prefixConn replays the sniffed bytes before reading on from the connection.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// connListener is a net.Listener fed with connections the front already accepted.
type connListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newConnListener(addr net.Addr) *connListener {
	return &connListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connListener) hand(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		_ = c.Close()
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// ---------------------------------------------------------------------------------------------
// REST: the Pub/Sub v1 HTTP/JSON API, translated to gRPC calls on the internal pstest server.

type api struct {
	pub pb.PublisherClient
	sub pb.SubscriberClient
}

// call is one REST request, as seen by a route.
type call struct {
	ctx   context.Context
	name  string // the resource the path names, without "/v1/" and the ":verb"
	body  []byte
	query map[string]string
	*api
}

// decode reads the JSON body into m (an empty body leaves m as is).
func (c *call) decode(m proto.Message) error {
	if len(bytes.TrimSpace(c.body)) == 0 {
		return nil
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(c.body, m); err != nil {
		return status.Errorf(codes.InvalidArgument, "invalid JSON payload: %v", err)
	}
	return nil
}

// parent is the collection's parent: "projects/p" for "projects/p/topics".
func (c *call) parent() string {
	return c.name[:strings.LastIndexByte(c.name, '/')]
}

// page reads the pageSize/pageToken query parameters.
func (c *call) page() (int32, string, error) {
	var size int32
	if v := c.query["pageSize"]; v != "" {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			return 0, "", status.Errorf(codes.InvalidArgument, "invalid pageSize %q", v)
		}
		size = int32(n)
	}
	return size, c.query["pageToken"], nil
}

// mask returns body's update mask, or the updateMask query parameter when the body has none.
func (c *call) mask(body *fieldmaskpb.FieldMask) *fieldmaskpb.FieldMask {
	v := c.query["updateMask"]
	if body != nil || v == "" {
		return body
	}
	m := &fieldmaskpb.FieldMask{}
	for _, p := range strings.Split(v, ",") {
		m.Paths = append(m.Paths, snake(strings.TrimSpace(p)))
	}
	return m
}

// snake turns a camelCase field path ("pushConfig.pushEndpoint") into proto names.
func snake(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

type route struct {
	method  string
	pattern string // resource segments ("*" = one non-empty segment), optionally ":verb"
	do      func(*call) (proto.Message, error)
}

const (
	topicPath    = "projects/*/topics/*"
	subPath      = "projects/*/subscriptions/*"
	snapshotPath = "projects/*/snapshots/*"
)

var routes = []route{
	// TopicAdmin (google.pubsub.v1.Publisher)
	{"PUT", topicPath, func(c *call) (proto.Message, error) {
		req := &pb.Topic{}
		if err := c.decode(req); err != nil {
			return nil, err
		}
		req.Name = c.name
		return c.pub.CreateTopic(c.ctx, req)
	}},
	{"GET", topicPath, func(c *call) (proto.Message, error) {
		return c.pub.GetTopic(c.ctx, &pb.GetTopicRequest{Topic: c.name})
	}},
	{"PATCH", topicPath, func(c *call) (proto.Message, error) {
		req := &pb.UpdateTopicRequest{}
		if err := c.decode(req); err != nil {
			return nil, err
		}
		if req.Topic == nil {
			req.Topic = &pb.Topic{}
		}
		req.Topic.Name = c.name
		req.UpdateMask = c.mask(req.UpdateMask)
		return c.pub.UpdateTopic(c.ctx, req)
	}},
	{"DELETE", topicPath, func(c *call) (proto.Message, error) {
		return c.pub.DeleteTopic(c.ctx, &pb.DeleteTopicRequest{Topic: c.name})
	}},
	{"GET", "projects/*/topics", func(c *call) (proto.Message, error) {
		size, token, err := c.page()
		if err != nil {
			return nil, err
		}
		return c.pub.ListTopics(c.ctx, &pb.ListTopicsRequest{Project: c.parent(), PageSize: size, PageToken: token})
	}},
	{"GET", topicPath + "/subscriptions", func(c *call) (proto.Message, error) {
		size, token, err := c.page()
		if err != nil {
			return nil, err
		}
		return c.pub.ListTopicSubscriptions(c.ctx, &pb.ListTopicSubscriptionsRequest{Topic: c.parent(), PageSize: size, PageToken: token})
	}},
	{"GET", topicPath + "/snapshots", func(c *call) (proto.Message, error) {
		size, token, err := c.page()
		if err != nil {
			return nil, err
		}
		return c.pub.ListTopicSnapshots(c.ctx, &pb.ListTopicSnapshotsRequest{Topic: c.parent(), PageSize: size, PageToken: token})
	}},
	{"POST", topicPath + ":publish", func(c *call) (proto.Message, error) {
		req := &pb.PublishRequest{}
		if err := c.decode(req); err != nil {
			return nil, err
		}
		req.Topic = c.name
		return c.pub.Publish(c.ctx, req)
	}},
	{"POST", subPath + ":detach", func(c *call) (proto.Message, error) {
		return c.pub.DetachSubscription(c.ctx, &pb.DetachSubscriptionRequest{Subscription: c.name})
	}},

	// SubscriptionAdmin (google.pubsub.v1.Subscriber)
	{"PUT", subPath, func(c *call) (proto.Message, error) {
		req := &pb.Subscription{}
		if err := c.decode(req); err != nil {
			return nil, err
		}
		req.Name = c.name
		return c.sub.CreateSubscription(c.ctx, req)
	}},
	{"GET", subPath, func(c *call) (proto.Message, error) {
		return c.sub.GetSubscription(c.ctx, &pb.GetSubscriptionRequest{Subscription: c.name})
	}},
	{"PATCH", subPath, func(c *call) (proto.Message, error) {
		req := &pb.UpdateSubscriptionRequest{}
		if err := c.decode(req); err != nil {
			return nil, err
		}
		if req.Subscription == nil {
			req.Subscription = &pb.Subscription{}
		}
		req.Subscription.Name = c.name
		req.UpdateMask = c.mask(req.UpdateMask)
		return c.sub.UpdateSubscription(c.ctx, req)
	}},
	{"DELETE", subPath, func(c *call) (proto.Message, error) {
		return c.sub.DeleteSubscription(c.ctx, &pb.DeleteSubscriptionRequest{Subscription: c.name})
	}},
	{"GET", "projects/*/subscriptions", func(c *call) (proto.Message, error) {
		size, token, err := c.page()
		if err != nil {
			return nil, err
		}
		return c.sub.ListSubscriptions(c.ctx, &pb.ListSubscriptionsRequest{Project: c.parent(), PageSize: size, PageToken: token})
	}},
	{"POST", subPath + ":modifyAckDeadline", func(c *call) (proto.Message, error) {
		req := &pb.ModifyAckDeadlineRequest{}
		if err := c.decode(req); err != nil {
			return nil, err
		}
		req.Subscription = c.name
		return c.sub.ModifyAckDeadline(c.ctx, req)
	}},
	{"POST", subPath + ":acknowledge", func(c *call) (proto.Message, error) {
		req := &pb.AcknowledgeRequest{}
		if err := c.decode(req); err != nil {
			return nil, err
		}
		req.Subscription = c.name
		return c.sub.Acknowledge(c.ctx, req)
	}},
	{"POST", subPath + ":pull", func(c *call) (proto.Message, error) {
		req := &pb.PullRequest{}
		if err := c.decode(req); err != nil {
			return nil, err
		}
		req.Subscription = c.name
		return c.sub.Pull(c.ctx, req)
	}},
	{"POST", subPath + ":modifyPushConfig", func(c *call) (proto.Message, error) {
		req := &pb.ModifyPushConfigRequest{}
		if err := c.decode(req); err != nil {
			return nil, err
		}
		req.Subscription = c.name
		return c.sub.ModifyPushConfig(c.ctx, req)
	}},
	{"POST", subPath + ":seek", func(c *call) (proto.Message, error) {
		req := &pb.SeekRequest{}
		if err := c.decode(req); err != nil {
			return nil, err
		}
		req.Subscription = c.name
		return c.sub.Seek(c.ctx, req)
	}},

	// Snapshots (SubscriptionAdmin; pstest v2.9.0 answers Unimplemented, passed on as 501).
	{"PUT", snapshotPath, func(c *call) (proto.Message, error) {
		req := &pb.CreateSnapshotRequest{}
		if err := c.decode(req); err != nil {
			return nil, err
		}
		req.Name = c.name
		return c.sub.CreateSnapshot(c.ctx, req)
	}},
	{"GET", snapshotPath, func(c *call) (proto.Message, error) {
		return c.sub.GetSnapshot(c.ctx, &pb.GetSnapshotRequest{Snapshot: c.name})
	}},
	{"PATCH", snapshotPath, func(c *call) (proto.Message, error) {
		req := &pb.UpdateSnapshotRequest{}
		if err := c.decode(req); err != nil {
			return nil, err
		}
		if req.Snapshot == nil {
			req.Snapshot = &pb.Snapshot{}
		}
		req.Snapshot.Name = c.name
		req.UpdateMask = c.mask(req.UpdateMask)
		return c.sub.UpdateSnapshot(c.ctx, req)
	}},
	{"DELETE", snapshotPath, func(c *call) (proto.Message, error) {
		return c.sub.DeleteSnapshot(c.ctx, &pb.DeleteSnapshotRequest{Snapshot: c.name})
	}},
	{"GET", "projects/*/snapshots", func(c *call) (proto.Message, error) {
		size, token, err := c.page()
		if err != nil {
			return nil, err
		}
		return c.sub.ListSnapshots(c.ctx, &pb.ListSnapshotsRequest{Project: c.parent(), PageSize: size, PageToken: token})
	}},
}

// match reports whether resource (and verb) fit pattern.
func match(pattern, resource, verb string) bool {
	pres, pverb, _ := strings.Cut(pattern, ":")
	if pverb != verb {
		return false
	}
	ps, rs := strings.Split(pres, "/"), strings.Split(resource, "/")
	if len(ps) != len(rs) {
		return false
	}
	for i, p := range ps {
		if rs[i] == "" || (p != "*" && p != rs[i]) {
			return false
		}
	}
	return true
}

// parseQuery splits only on '&', so "$alt=json;enum-encoding=int" survives unescaped semicolons.
func parseQuery(raw string) map[string]string {
	q := map[string]string{}
	for _, kv := range strings.Split(raw, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		if uk, err := url.QueryUnescape(k); err == nil {
			k = uk
		}
		if uv, err := url.QueryUnescape(v); err == nil {
			v = uv
		}
		q[k] = v
	}
	return q
}

func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	query := parseQuery(r.URL.RawQuery)
	intEnums := strings.Contains(query["$alt"], "enum-encoding=int")
	resource, ok := strings.CutPrefix(r.URL.Path, "/v1/")
	if !ok {
		writeError(w, r, status.Errorf(codes.Unimplemented, "%s %s is not implemented by this Pub/Sub fake", r.Method, r.URL.Path))
		return
	}
	verb := ""
	if i := strings.LastIndexByte(resource, '/'); strings.Contains(resource[i+1:], ":") {
		j := i + 1 + strings.IndexByte(resource[i+1:], ':')
		resource, verb = resource[:j], resource[j+1:]
	}
	var rt *route
	for i := range routes {
		if routes[i].method == r.Method && match(routes[i].pattern, resource, verb) {
			rt = &routes[i]
			break
		}
	}
	if rt == nil {
		writeError(w, r, status.Errorf(codes.Unimplemented, "%s %s is not implemented by this Pub/Sub fake", r.Method, r.URL.Path))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, r, status.Errorf(codes.InvalidArgument, "cannot read the request body: %v", err))
		return
	}
	resp, err := rt.do(&call{ctx: r.Context(), name: resource, body: body, query: query, api: a})
	if err != nil {
		writeError(w, r, err)
		return
	}
	out, err := (protojson.MarshalOptions{UseEnumNumbers: intEnums}).Marshal(resp)
	if err != nil {
		writeError(w, r, status.Errorf(codes.Internal, "cannot encode the response: %v", err))
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

// httpCodes maps gRPC codes to the HTTP status Google's REST APIs answer with.
var httpCodes = map[codes.Code]int{
	codes.OK:                 http.StatusOK,
	codes.Canceled:           499,
	codes.Unknown:            http.StatusInternalServerError,
	codes.InvalidArgument:    http.StatusBadRequest,
	codes.DeadlineExceeded:   http.StatusGatewayTimeout,
	codes.NotFound:           http.StatusNotFound,
	codes.AlreadyExists:      http.StatusConflict,
	codes.PermissionDenied:   http.StatusForbidden,
	codes.ResourceExhausted:  http.StatusTooManyRequests,
	codes.FailedPrecondition: http.StatusBadRequest,
	codes.Aborted:            http.StatusConflict,
	codes.OutOfRange:         http.StatusBadRequest,
	codes.Unimplemented:      http.StatusNotImplemented,
	codes.Internal:           http.StatusInternalServerError,
	codes.Unavailable:        http.StatusServiceUnavailable,
	codes.DataLoss:           http.StatusInternalServerError,
	codes.Unauthenticated:    http.StatusUnauthorized,
}

// statusNames are the canonical google.rpc.Code names ("NOT_FOUND"), as the JSON error carries.
var statusNames = map[codes.Code]string{
	codes.OK:                 "OK",
	codes.Canceled:           "CANCELLED",
	codes.Unknown:            "UNKNOWN",
	codes.InvalidArgument:    "INVALID_ARGUMENT",
	codes.DeadlineExceeded:   "DEADLINE_EXCEEDED",
	codes.NotFound:           "NOT_FOUND",
	codes.AlreadyExists:      "ALREADY_EXISTS",
	codes.PermissionDenied:   "PERMISSION_DENIED",
	codes.ResourceExhausted:  "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION",
	codes.Aborted:            "ABORTED",
	codes.OutOfRange:         "OUT_OF_RANGE",
	codes.Unimplemented:      "UNIMPLEMENTED",
	codes.Internal:           "INTERNAL",
	codes.Unavailable:        "UNAVAILABLE",
	codes.DataLoss:           "DATA_LOSS",
	codes.Unauthenticated:    "UNAUTHENTICATED",
}

// writeError answers with Google's JSON error body: {"error":{"code":404,"message":...,"status":"NOT_FOUND"}}.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		err = status.Error(codes.Canceled, err.Error())
	} else if errors.Is(err, context.DeadlineExceeded) {
		err = status.Error(codes.DeadlineExceeded, err.Error())
	}
	st := status.Convert(err)
	code, ok := httpCodes[st.Code()]
	if !ok {
		code = http.StatusInternalServerError
	}
	name, ok := statusNames[st.Code()]
	if !ok {
		name = "UNKNOWN"
	}
	type body struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
	}
	out, _ := json.Marshal(struct {
		Error body `json:"error"`
	}{body{code, st.Message(), name}})
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(code)
	_, _ = w.Write(out)
	if code >= 500 {
		fmt.Fprintf(os.Stderr, "pstest: REST %s %s: %d %s: %s\n", r.Method, r.URL.Path, code, name, st.Message())
	}
}

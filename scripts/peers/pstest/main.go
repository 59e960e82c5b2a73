// Command pstest runs Google's in-process Pub/Sub fake (cloud.google.com/go/pubsub/v2/pstest)
// as a standalone plaintext gRPC server, for tests: PUBSUB_EMULATOR_HOST=<addr>.
//
//	pstest --addr 127.0.0.1:0
//
// The first line on stdout is always "listening HOST:PORT" (the real port when 0 was asked).
// SIGINT/SIGTERM shut it down cleanly (exit 0).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"cloud.google.com/go/pubsub/v2/pstest"
)

// version is the pstest module version this program is built against (see go.mod).
const version = "pubsub/v2 v2.9.0"

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
	s, err := start(*addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pstest: cannot listen on %s: %v\n", *addr, err)
		os.Exit(1)
	}
	fmt.Printf("listening %s\n", s.Addr)
	os.Stdout.Sync()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	got := <-sig
	fmt.Fprintf(os.Stderr, "pstest: %v, shutting down\n", got)
	done := make(chan struct{})
	go func() { _ = s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		fmt.Fprintln(os.Stderr, "pstest: close timed out")
	}
}

//! Trace context across a bridge: a trace started by a producer on one backend is continued by
//! the bridge route (its `process` span is a child of the producer's span) and by a consumer on
//! the sink backend: one trace id across all three. Checked with OpenTelemetry's in-memory
//! exporter in process, and through the daemon binary exporting OTLP to a receiver this test
//! runs.

use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use prost::Message;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tributary::otel::format_traceparent;
use tributary::{Backend, ConsumerOptions, Event, StartPosition};
use tributary_bridge::route::{self, CancellationToken, RouteSpec, RouteStats};
use tributary_bridge::telemetry::RouteTracer;

const BIN: &str = env!("CARGO_BIN_EXE_tributary");
const DEADLINE: Duration = Duration::from_secs(60);

struct Telemetry {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Telemetry {
    /// Spans of this thread's `tracing` spans (the tests run on a current-thread runtime) and
    /// of the route's tracer, all to memory.
    fn install() -> Telemetry {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("app")));
        let guard = tracing::subscriber::set_default(subscriber);
        Telemetry {
            exporter,
            provider,
            _guard: guard,
        }
    }
    fn spans(&self) -> Vec<SpanData> {
        let _ = self.provider.force_flush();
        self.exporter.get_finished_spans().unwrap()
    }
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// Sends `traced` events, each inside a `checkout` span of its own (so each starts a trace),
/// and `untraced` events outside any span.
async fn produce(backend: &Arc<dyn Backend>, stream: &str, traced: usize, untraced: usize) {
    let producer = backend.producer(stream).await.unwrap();
    for i in 0..traced {
        producer
            .send(Event::new(format!("traced-{i}")).with_key(format!("k{i}")))
            .instrument(tracing::info_span!("checkout", order = i))
            .await
            .unwrap();
    }
    let plain: Vec<Event> = (0..untraced)
        .map(|i| Event::new(format!("plain-{i}")).with_key(format!("k{i}")))
        .collect();
    producer.send_batch(plain).await.unwrap();
    producer.close().await.unwrap();
}

/// Receives `count` events from the sink, each processed inside its `process` span; returns
/// the payloads whose event carried a `traceparent`.
async fn consume(backend: &Arc<dyn Backend>, stream: &str, count: usize) -> Vec<String> {
    let consumer = backend
        .consumer(
            stream,
            ConsumerOptions::new("downstream").start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let mut traced = Vec::new();
    for _ in 0..count {
        let delivery = tokio::time::timeout(DEADLINE, consumer.receive())
            .await
            .expect("the sink's events arrive")
            .unwrap();
        if delivery.event.trace_context().is_some() {
            traced.push(String::from_utf8_lossy(&delivery.event.payload).into_owned());
        }
        async {}.instrument(delivery.process_span(stream)).await;
        delivery.ack();
    }
    consumer.close().await.unwrap();
    traced
}

/// In process: `file://` → route → `memory://`, 40 traced and 300 untraced events.
#[tokio::test(flavor = "current_thread")]
async fn one_trace_from_producer_through_a_route_to_a_consumer_on_another_backend() {
    let telemetry = Telemetry::install();
    let dir = tempfile::tempdir().unwrap();
    let source = tributary::connect(&format!("file://{}", dir.path().display()))
        .await
        .unwrap();
    let sink = tributary::connect("memory://").await.unwrap();
    produce(&source, "orders", 40, 300).await;

    let mut spec = RouteSpec::new(
        "orders-route",
        source.clone(),
        "orders",
        sink.clone(),
        "orders-copy",
    );
    spec.group = "bridge".into();
    spec.start = "earliest".parse().unwrap();
    spec.max_batch = 64;
    spec.tracer = Some(RouteTracer::new(telemetry.provider.tracer("bridge")));
    let stats = Arc::new(RouteStats::default());
    let cancel = CancellationToken::default();
    let route = tokio::spawn(route::run_route(spec, stats.clone(), cancel.clone()));
    let traced = consume(&sink, "orders-copy", 340).await;
    cancel.cancel();
    route.await.unwrap().unwrap();
    assert_eq!(traced.len(), 40, "every traced event keeps its traceparent");

    let spans = telemetry.spans();
    let sends = named(&spans, "send orders");
    let hops = named(&spans, "process orders");
    let consumers = named(&spans, "process orders-copy");
    let receives = named(&spans, "receive orders");
    let writes = named(&spans, "send orders-copy");
    assert_eq!(sends.len(), 40);
    assert_eq!(hops.len(), 40, "one bridge process span per traced event");
    assert_eq!(
        consumers.len(),
        340,
        "the consumer processes every event in a span"
    );
    assert!(!receives.is_empty() && !writes.is_empty());
    for send in &sends {
        let trace = send.span_context.trace_id();
        let hop = hops
            .iter()
            .find(|s| s.span_context.trace_id() == trace)
            .expect("the bridge continues the producer's trace");
        let consumer = consumers
            .iter()
            .find(|s| s.span_context.trace_id() == trace)
            .expect("the sink's consumer continues the producer's trace");
        assert_eq!(hop.parent_span_id, send.span_context.span_id());
        assert_eq!(consumer.parent_span_id, send.span_context.span_id());
        assert_eq!(hop.span_kind, SpanKind::Consumer);
        assert_eq!(hop.links.len(), 1);
        assert_eq!(
            attribute(hop, "messaging.system").as_deref(),
            Some("tributary")
        );
        assert_eq!(
            attribute(hop, "messaging.destination.name").as_deref(),
            Some("orders")
        );
        assert_eq!(
            attribute(hop, "messaging.consumer.group.name").as_deref(),
            Some("bridge")
        );
        assert!(attribute(hop, "messaging.destination.partition.id").is_some());
    }
    // The sink writes link every creation context they carry, once each.
    let linked: usize = writes.iter().map(|w| w.links.len()).sum();
    assert_eq!(linked, 40);
    for write in &writes {
        assert_eq!(write.span_kind, SpanKind::Producer);
        assert_eq!(
            attribute(write, "messaging.destination.name").as_deref(),
            Some("orders-copy")
        );
        // A child of its batch's receive span.
        assert!(
            receives
                .iter()
                .any(|r| r.span_context.span_id() == write.parent_span_id)
        );
    }
    let received: i64 = receives
        .iter()
        .map(|r| {
            attribute(r, "messaging.batch.message_count")
                .unwrap()
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(received, 340);
}

/// A route without a tracer makes no span, and events keep their `traceparent` all the same.
#[tokio::test(flavor = "current_thread")]
async fn a_route_without_tracing_makes_no_span_and_forwards_context() {
    let telemetry = Telemetry::install();
    let source = tributary::connect("memory://").await.unwrap();
    let sink = tributary::connect("memory://").await.unwrap();
    produce(&source, "orders", 5, 5).await;
    let mut spec = RouteSpec::new("r", source.clone(), "orders", sink.clone(), "copy");
    spec.start = "earliest".parse().unwrap();
    let cancel = CancellationToken::default();
    let route = tokio::spawn(route::run_route(
        spec,
        Arc::new(RouteStats::default()),
        cancel.clone(),
    ));
    let traced = consume(&sink, "copy", 10).await;
    cancel.cancel();
    route.await.unwrap().unwrap();
    assert_eq!(traced.len(), 5);
    let spans = telemetry.spans();
    assert!(named(&spans, "receive orders").is_empty());
    assert!(named(&spans, "process orders").is_empty());
    assert!(named(&spans, "send copy").is_empty());
    assert_eq!(named(&spans, "send orders").len(), 5);
    // The consumer behind the route still continues the producers' traces.
    let sends = named(&spans, "send orders");
    let continued = named(&spans, "process copy")
        .into_iter()
        .filter(|p| {
            sends
                .iter()
                .any(|s| s.span_context.span_id() == p.parent_span_id)
        })
        .count();
    assert_eq!(continued, 5);
}

/// Spans an OTLP/HTTP receiver got: (trace id, span id, parent span id, name, kind,
/// service.name).
type Received = Arc<Mutex<Vec<(Vec<u8>, Vec<u8>, Vec<u8>, String, i32, String)>>>;

/// A minimal OTLP/HTTP (protobuf) trace receiver on a free port: decodes every
/// `POST /v1/traces` with the protocol's own message types and answers 200.
fn otlp_receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let received: Received = Arc::default();
    let sink = received.clone();
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            let Ok(connection) = connection else { return };
            let sink = sink.clone();
            std::thread::spawn(move || {
                let _ = connection.set_read_timeout(Some(DEADLINE));
                let mut writer = connection.try_clone().unwrap();
                let mut reader = BufReader::new(connection);
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0usize;
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 {
                            return;
                        }
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    assert!(
                        request_line.starts_with("POST /v1/traces "),
                        "{request_line}"
                    );
                    let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
                    let mut spans = sink.lock().unwrap();
                    for resource in request.resource_spans {
                        let service = resource
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|kv| kv.key == "service.name")
                            .and_then(|kv| kv.value.as_ref())
                            .map(|v| format!("{:?}", v.value))
                            .unwrap_or_default();
                        for scope in resource.scope_spans {
                            for s in scope.spans {
                                spans.push((
                                    s.trace_id,
                                    s.span_id,
                                    s.parent_span_id,
                                    s.name,
                                    s.kind,
                                    service.clone(),
                                ));
                            }
                        }
                    }
                    drop(spans);
                    let _ = writer.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                    );
                }
            });
        }
    });
    (endpoint, received)
}

/// Whether the daemon's `/readyz` answers 200 (every route open).
fn ready(addr: &str) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.write_all(format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes());
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

/// End to end through the daemon: a producer's trace, the daemon's spans exported over OTLP to
/// a receiver started here, and a consumer on the sink, all in one trace.
#[tokio::test(flavor = "current_thread")]
async fn the_daemon_exports_route_spans_over_otlp_in_the_producers_trace() {
    let telemetry = Telemetry::install();
    let (endpoint, received) = otlp_receiver();
    let dir = tempfile::tempdir().unwrap();
    let source_url = format!("file://{}", dir.path().join("source").display());
    let sink_url = format!("file://{}", dir.path().join("sink").display());
    {
        let source = tributary::connect(&source_url).await.unwrap();
        produce(&source, "orders", 25, 500).await;
        source.close().await.unwrap();
    }
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"10s\"\n\n[daemon.tracing]\nendpoint = \"{endpoint}\"\nservice_name = \"bridge-under-test\"\n\n[[route]]\nname = \"orders\"\nsource = {{ url = \"{source_url}\", stream = \"orders\", group = \"bridge\" }}\nsink = {{ url = \"{sink_url}\", stream = \"orders-copy\" }}\nbatch = {{ max_events = 100 }}\n"
        ),
    )
    .unwrap();
    let mut daemon = Command::new(BIN)
        .args(["bridge", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(daemon.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "daemon exited before serving"
        );
        if line.contains("operations endpoint") {
            break;
        }
    }
    // Routes connect in the background: until the route is open the sink stream may not
    // exist yet, and only the daemon (its writer) may create it.
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|rest| rest.split('/').next())
        .expect("the operations endpoint's address")
        .to_string();
    let deadline = Instant::now() + DEADLINE;
    while !ready(&addr) {
        assert!(Instant::now() < deadline, "the daemon never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The sink, read while the daemon writes it: 525 events.
    let sink = tributary::connect(&sink_url).await.unwrap();
    let traced = consume(&sink, "orders-copy", 525).await;
    sink.close().await.unwrap();
    assert_eq!(traced.len(), 25);
    // SAFETY: kill(2) on the child we spawned.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "exit {status:?}: {rest}");

    // The daemon exports what it buffered before exiting.
    let deadline = Instant::now() + DEADLINE;
    let exported = loop {
        let spans = received.lock().unwrap().clone();
        if spans.iter().filter(|s| s.3 == "process orders").count() >= 25 {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "the OTLP receiver got {} spans: {:?}",
            spans.len(),
            spans.iter().map(|s| &s.3).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let spans = telemetry.spans();
    let sends = named(&spans, "send orders");
    let consumers = named(&spans, "process orders-copy");
    assert_eq!(sends.len(), 25);
    for send in sends {
        let trace = send.span_context.trace_id().to_bytes().to_vec();
        let producer_span = send.span_context.span_id().to_bytes().to_vec();
        let hop = exported
            .iter()
            .find(|s| s.0 == trace && s.3 == "process orders")
            .unwrap_or_else(|| {
                panic!(
                    "no daemon span in trace {}",
                    format_traceparent(&send.span_context)
                )
            });
        assert_eq!(
            hop.2, producer_span,
            "the daemon's span is the producer's child"
        );
        assert_eq!(hop.4, 5, "SPAN_KIND_CONSUMER");
        assert!(hop.5.contains("bridge-under-test"), "{}", hop.5);
        let consumer = consumers
            .iter()
            .find(|s| s.span_context.trace_id() == send.span_context.trace_id())
            .expect("the consumer continues the trace");
        assert_eq!(consumer.parent_span_id, send.span_context.span_id());
    }
    assert!(exported.iter().any(|s| s.3 == "receive orders"));
    assert!(
        exported
            .iter()
            .any(|s| s.3 == "send orders-copy" && s.4 == 4)
    );
}

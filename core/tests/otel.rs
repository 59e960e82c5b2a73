//! Trace context through the core layer, checked with OpenTelemetry's in-memory exporter: a
//! send inside a span carries `traceparent`, a consumer's process span continues the trace.

use opentelemetry::Value;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tributary::otel::{TRACEPARENT, TRACESTATE};
use tributary::{ConsumerOptions, Event, StartPosition};

struct Telemetry {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Telemetry {
    /// A tracing subscriber exporting to memory, for this thread (the tests run on a
    /// current-thread runtime, so every poll sees it).
    fn install() -> Telemetry {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
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
    fn span(&self, name: &str) -> SpanData {
        let spans = self.spans();
        spans
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .unwrap_or_else(|| {
                let names: Vec<_> = spans.iter().map(|s| s.name.to_string()).collect();
                panic!("no span `{name}` among {names:?}")
            })
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

fn earliest(group: &str) -> ConsumerOptions {
    ConsumerOptions::new(group).start(StartPosition::Earliest)
}

#[tokio::test(flavor = "current_thread")]
async fn a_trace_continues_from_producer_to_consumer() {
    let telemetry = Telemetry::install();
    let backend = tributary::connect("memory://").await.unwrap();
    let producer = backend.producer("orders").await.unwrap();
    let receipt = producer
        .send(Event::new("order 1").with_key("c-7"))
        .instrument(tracing::info_span!("checkout"))
        .await
        .unwrap();

    let consumer = backend
        .consumer("orders", earliest("billing"))
        .await
        .unwrap();
    let delivery = consumer.receive().await.unwrap();
    let traceparent = delivery.event.headers.get(TRACEPARENT).cloned();
    async {}.instrument(delivery.process_span("orders")).await;
    delivery.ack();
    consumer.close().await.unwrap();

    let checkout = telemetry.span("checkout");
    let send = telemetry.span("send orders");
    let process = telemetry.span("process orders");
    let trace = checkout.span_context.trace_id();
    assert_eq!(send.span_context.trace_id(), trace);
    assert_eq!(
        process.span_context.trace_id(),
        trace,
        "one trace across producer and consumer"
    );
    assert_eq!(send.parent_span_id, checkout.span_context.span_id());
    assert_eq!(process.parent_span_id, send.span_context.span_id());
    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(process.span_kind, SpanKind::Consumer);
    // The header is the send span's context, and the process span links to it.
    assert_eq!(
        traceparent.as_deref(),
        Some(tributary::otel::format_traceparent(&send.span_context).as_bytes())
    );
    let links: Vec<_> = process
        .links
        .iter()
        .map(|l| l.span_context.clone())
        .collect();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].span_id(), send.span_context.span_id());
    // Messaging attributes of the semantic conventions.
    assert_eq!(
        attribute(&send, "messaging.system"),
        Some("tributary".into())
    );
    assert_eq!(
        attribute(&send, "messaging.destination.name"),
        Some("orders".into())
    );
    assert_eq!(
        attribute(&send, "messaging.operation.type"),
        Some("send".into())
    );
    assert_eq!(
        attribute(&send, "messaging.destination.partition.id"),
        receipt.partition.as_ref().map(|p| p.to_string().into())
    );
    assert_eq!(
        attribute(&process, "messaging.operation.type"),
        Some("process".into())
    );
    assert_eq!(
        attribute(&process, "messaging.destination.partition.id"),
        receipt.partition.as_ref().map(|p| p.to_string().into())
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_batch_shares_one_send_span_and_keeps_creation_contexts() {
    let telemetry = Telemetry::install();
    let backend = tributary::connect("memory://").await.unwrap();
    let producer = backend.producer("orders").await.unwrap();
    // An event forwarded from elsewhere already has its creation context: it stays.
    let foreign = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let events = vec![
        Event::new("a"),
        Event::new("b")
            .with_header(TRACEPARENT, foreign)
            .with_header(TRACESTATE, "x=1"),
        Event::new("c"),
    ];
    producer
        .send_batch(events)
        .instrument(tracing::info_span!("import"))
        .await
        .unwrap();
    let consumer = backend.consumer("orders", earliest("g")).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let d = consumer.receive().await.unwrap();
        seen.push((
            d.event.payload.clone(),
            d.event.headers.get(TRACEPARENT).cloned(),
            d.event.headers.get(TRACESTATE).cloned(),
        ));
        d.ack();
    }
    seen.sort();
    let send = telemetry.span("send orders");
    assert_eq!(
        attribute(&send, "messaging.batch.message_count"),
        Some(Value::I64(3))
    );
    let own = tributary::otel::format_traceparent(&send.span_context);
    assert_eq!(seen[0].1.as_deref(), Some(own.as_bytes()));
    assert_eq!(seen[1].1.as_deref(), Some(foreign.as_bytes()));
    assert_eq!(seen[1].2.as_deref(), Some(&b"x=1"[..]));
    assert_eq!(seen[2].1.as_deref(), Some(own.as_bytes()));
    assert_eq!(
        telemetry
            .spans()
            .iter()
            .filter(|s| s.name == "send orders")
            .count(),
        1
    );
}

#[tokio::test(flavor = "current_thread")]
async fn without_a_context_nothing_is_added() {
    let telemetry = Telemetry::install();
    let backend = tributary::connect("memory://").await.unwrap();
    let producer = backend.producer("orders").await.unwrap();
    producer.send(Event::new("plain")).await.unwrap();
    let consumer = backend.consumer("orders", earliest("g")).await.unwrap();
    let d = consumer.receive().await.unwrap();
    assert!(d.event.headers.is_empty(), "{:?}", d.event.headers);
    assert!(d.trace_context().is_none());
    assert!(!d.link_span(&tracing::Span::current()));
    d.ack();
    assert!(
        telemetry.spans().is_empty(),
        "no span is made without a context"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_attached_opentelemetry_context_is_used_without_tracing_spans() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let tracer = provider.tracer("plain-otel");
    let span = tracer.start("job");
    let job = span.span_context().clone();
    let cx = opentelemetry::Context::current_with_span(span);
    let backend = tributary::connect("memory://").await.unwrap();
    let producer = backend.producer("jobs").await.unwrap();
    {
        let _attached = cx.attach();
        // Polled here, with the context attached to this thread.
        producer.send(Event::new("job")).await.unwrap();
    }
    let consumer = backend.consumer("jobs", earliest("g")).await.unwrap();
    let d = consumer.receive().await.unwrap();
    let carried = d.event.trace_context().unwrap();
    assert_eq!(carried.trace_id(), job.trace_id());
    assert_eq!(carried.span_id(), job.span_id());
    assert!(carried.is_remote());
    let parent = d.trace_context().unwrap();
    assert_eq!(parent.span().span_context().span_id(), job.span_id());
    d.ack();
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_send_marks_its_span() {
    let telemetry = Telemetry::install();
    let backend = tributary::connect("memory://").await.unwrap();
    let producer = backend.producer("orders").await.unwrap();
    producer.close().await.unwrap();
    let err = producer
        .send(Event::new("late"))
        .instrument(tracing::info_span!("late"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), tributary::ErrorKind::Closed);
    let send = telemetry.span("send orders");
    assert!(
        matches!(send.status, Status::Error { .. }),
        "{:?}",
        send.status
    );
    assert_eq!(attribute(&send, "error.type"), Some("Closed".into()));
}

#[tokio::test(flavor = "current_thread")]
async fn a_processing_span_of_ones_own_can_be_linked() {
    let telemetry = Telemetry::install();
    let backend = tributary::connect("memory://").await.unwrap();
    let producer = backend.producer("orders").await.unwrap();
    producer
        .send(Event::new("x"))
        .instrument(tracing::info_span!("origin"))
        .await
        .unwrap();
    let consumer = backend.consumer("orders", earliest("g")).await.unwrap();
    let d = consumer.receive().await.unwrap();
    let batch = tracing::info_span!("nightly batch");
    assert!(d.link_span(&batch));
    batch.set_attribute("batch.size", 1);
    drop(batch);
    d.ack();
    let origin = telemetry.span("origin");
    let batch = telemetry.span("nightly batch");
    assert_ne!(
        batch.span_context.trace_id(),
        origin.span_context.trace_id()
    );
    assert_eq!(batch.links.len(), 1);
    assert_eq!(
        batch.links.iter().next().unwrap().span_context.trace_id(),
        origin.span_context.trace_id()
    );
}

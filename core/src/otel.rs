//! W3C Trace Context in event headers, so a trace continues from producer to consumer on every
//! backend (enabled by the `otel` feature).
//!
//! **Producing.** Inside a [`tracing`] span that has an OpenTelemetry context (a
//! `tracing-opentelemetry` layer is installed, or an OpenTelemetry context is attached), every
//! producer made by [`crate::connect`] or a [`crate::Registry`] opens a `send {stream}` span
//! (kind producer, with the messaging attributes of OpenTelemetry's semantic conventions) and
//! writes its context into each event's `traceparent` header, with `tracestate` when there is
//! one. Headers are what every backend carries natively (Kafka headers, Pulsar properties,
//! Pub/Sub attributes, Event Hubs application properties, the Kinesis envelope), so this is done
//! once, here. An event that already has a `traceparent` keeps it: that is the event's creation
//! context, which intermediaries such as the bridge forward unchanged.
//!
//! **Consuming.** [`Delivery::trace_context`] reads the creation context back;
//! [`Delivery::process_span`] opens the application's `process {stream}` span as its child,
//! linked to it, and [`Delivery::link_span`] links a span of your own.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> tributary::Result<()> {
//! use tributary::{ConsumerOptions, Event, StartPosition};
//! use tracing::Instrument;
//!
//! let backend = tributary::connect("memory://").await?;
//! let producer = backend.producer("orders").await?;
//! // Inside a span exported through tracing-opentelemetry, this event gets a `traceparent`.
//! producer.send(Event::new("hello")).instrument(tracing::info_span!("checkout")).await?;
//!
//! let consumer = backend
//!     .consumer("orders", ConsumerOptions::new("billing").start(StartPosition::Earliest))
//!     .await?;
//! let delivery = consumer.receive().await?;
//! let span = delivery.process_span("orders"); // child of the producer's span, when there is one
//! async { /* process the event */ }.instrument(span).await;
//! delivery.ack();
//! # Ok(()) }
//! ```
//!
//! Without a context nothing is added and no span is made: a send costs one look at the
//! current span. Without the feature none of this is compiled.

use crate::{Delivery, Event, Headers, Receipt, Result};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use std::fmt::Write as _;
use std::str::FromStr;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header that carries the W3C `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// The header that carries the W3C `tracestate`.
pub const TRACESTATE: &str = "tracestate";

/// The `messaging.system` value of OpenTelemetry's semantic conventions for a backend scheme.
/// Kinesis has none in the conventions (`aws_kinesis` is used); the local backend reports
/// `tributary`.
pub fn messaging_system(scheme: &str) -> &'static str {
    match scheme {
        "kafka" => "kafka",
        "pulsar" => "pulsar",
        "pubsub" => "gcp_pubsub",
        "eventhubs" => "eventhubs",
        "kinesis" => "aws_kinesis",
        _ => "tributary",
    }
}

fn hex_field<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Parses a `traceparent` value as W3C Trace Context level 1 requires: lower-case hex,
/// version `00` exactly 55 characters, a later version read by its first four fields, version
/// `ff` and all-zero ids refused.
pub fn parse_traceparent(value: &[u8]) -> Option<(TraceId, SpanId, TraceFlags)> {
    let value = std::str::from_utf8(value).ok()?.trim_matches([' ', '\t']);
    if value.len() < 55 || !value.is_ascii() {
        return None;
    }
    let [version] = hex_field::<1>(&value[0..2])?;
    if version == 0xff
        || (version == 0 && value.len() != 55)
        || (value.len() > 55 && value.as_bytes()[55] != b'-')
    {
        return None;
    }
    let b = value.as_bytes();
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let trace = u128::from_be_bytes(hex_field::<16>(&value[3..35])?);
    let span = u64::from_be_bytes(hex_field::<8>(&value[36..52])?);
    let [flags] = hex_field::<1>(&value[53..55])?;
    if trace == 0 || span == 0 {
        return None;
    }
    Some((
        TraceId::from(trace),
        SpanId::from(span),
        TraceFlags::new(flags),
    ))
}

/// The `traceparent` value of a span context (version `00`).
pub fn format_traceparent(context: &SpanContext) -> String {
    let mut out = String::with_capacity(55);
    let _ = write!(
        out,
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    );
    out
}

/// The span context in `headers` (`traceparent`, and `tracestate` when valid), marked remote;
/// `None` when there is none or it is malformed.
pub fn extract(headers: &Headers) -> Option<SpanContext> {
    let (trace, span, flags) = parse_traceparent(headers.get(TRACEPARENT)?)?;
    // Several tracestate headers are one list, joined in order (W3C: combined with commas).
    let mut state = String::new();
    for value in headers.get_all(TRACESTATE) {
        if let Ok(value) = std::str::from_utf8(value) {
            if !state.is_empty() && !value.trim().is_empty() {
                state.push(',');
            }
            state.push_str(value.trim());
        }
    }
    let state = TraceState::from_str(&state).unwrap_or_default();
    Some(SpanContext::new(trace, span, flags, true, state))
}

/// Writes `context` into `headers` as `traceparent` (and `tracestate` when it has one),
/// replacing what was there. An invalid context writes nothing.
pub fn inject(context: &SpanContext, headers: &mut Headers) {
    if !context.is_valid() {
        return;
    }
    headers.insert(TRACEPARENT, format_traceparent(context));
    let state = context.trace_state().header();
    if state.is_empty() {
        headers.remove(TRACESTATE);
    } else {
        headers.insert(TRACESTATE, state);
    }
}

/// The span context of the current span: the current [`tracing`] span's OpenTelemetry context,
/// else the attached OpenTelemetry context; `None` when neither has a valid span.
pub fn current() -> Option<SpanContext> {
    let span = tracing::Span::current();
    if !span.is_none() {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            return Some(sc);
        }
    }
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.clone())
}

impl Event {
    /// The creation context the producer attached (`traceparent`/`tracestate`), if any.
    pub fn trace_context(&self) -> Option<SpanContext> {
        extract(&self.headers)
    }
    /// Sets `traceparent` (and `tracestate`) from `context`.
    pub fn with_trace_context(mut self, context: &SpanContext) -> Self {
        inject(context, &mut self.headers);
        self
    }
}

impl Delivery {
    /// The producer's trace context as an OpenTelemetry [`Context`](opentelemetry::Context)
    /// whose span is the (remote) producer span: pass it to `set_parent` or a tracer's
    /// `start_with_context`. `None` when the event carries none.
    pub fn trace_context(&self) -> Option<opentelemetry::Context> {
        let sc = self.event.trace_context()?;
        Some(opentelemetry::Context::new().with_remote_span_context(sc))
    }

    /// Adds a link from `span` to the producer's span; `false` when the event carries no
    /// trace context. Use it when the processing span must stay in its own trace (a batch
    /// spanning many producers' traces).
    pub fn link_span(&self, span: &tracing::Span) -> bool {
        match self.event.trace_context() {
            Some(sc) => {
                span.add_link(sc);
                true
            }
            None => false,
        }
    }

    /// A `process {stream}` span (kind consumer) for the application's work on this event,
    /// following OpenTelemetry's messaging conventions: a child of the producer's span, so
    /// it is in the same trace, and linked to it. Enter it (or `instrument` a future with it)
    /// while processing. `messaging.system` and `messaging.consumer.group.name` are left
    /// for you to record (`span.record("messaging.system", messaging_system(scheme))`).
    ///
    /// Made at level INFO with target `tributary::otel`: a filter that drops it drops it.
    pub fn process_span(&self, stream: &str) -> tracing::Span {
        let span = tracing::info_span!(
            target: "tributary::otel",
            "process",
            otel.name = %format_args!("process {stream}"),
            otel.kind = "consumer",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = stream,
            messaging.destination.partition.id = tracing::field::Empty,
            messaging.message.id = tracing::field::Empty,
            messaging.system = tracing::field::Empty,
            messaging.consumer.group.name = tracing::field::Empty,
            tributary.delivery.attempt = tracing::field::Empty,
        );
        if span.is_disabled() {
            return span;
        }
        if let Some(p) = &self.partition {
            span.record("messaging.destination.partition.id", p.as_str());
        }
        if let Some(p) = &self.position {
            span.record("messaging.message.id", p.as_str());
        }
        if let Some(attempt) = self.attempt {
            span.record("tributary.delivery.attempt", i64::from(attempt));
        }
        if let Some(sc) = self.event.trace_context() {
            let _ =
                span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc.clone()));
            span.add_link(sc);
        }
        span
    }
}

/// The producer side, used by the layer every backend is wrapped in ([`crate::backend::stamped`]).
pub(crate) struct SendTrace {
    span: tracing::Span,
}

impl SendTrace {
    /// When there is a current trace context: opens the `send {stream}` span and gives every
    /// event without a `traceparent` the span's context (or the current one, when the span is
    /// filtered out). `None`, at the cost of one look-up, when there is no context.
    pub(crate) fn start(scheme: &str, stream: &str, events: &mut [Event]) -> Option<SendTrace> {
        let parent = current()?;
        let span = tracing::info_span!(
            target: "tributary::otel",
            "send",
            otel.name = %format_args!("send {stream}"),
            otel.kind = "producer",
            messaging.system = messaging_system(scheme),
            messaging.operation.type = "send",
            messaging.operation.name = "send",
            messaging.destination.name = stream,
            messaging.batch.message_count = tracing::field::Empty,
            messaging.destination.partition.id = tracing::field::Empty,
            messaging.message.id = tracing::field::Empty,
            error.type = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        if events.len() > 1 {
            span.record("messaging.batch.message_count", events.len() as i64);
        }
        let own = span.context().span().span_context().clone();
        let context = if own.is_valid() { own } else { parent };
        let mut value: Option<(bytes::Bytes, Option<bytes::Bytes>)> = None;
        for event in events.iter_mut() {
            if event.headers.get(TRACEPARENT).is_some() {
                continue;
            }
            // One formatted value shared by every event of the batch.
            let (parent_value, state) = value.get_or_insert_with(|| {
                let state = context.trace_state().header();
                (
                    format_traceparent(&context).into(),
                    (!state.is_empty()).then(|| state.into()),
                )
            });
            event.headers.insert(TRACEPARENT, parent_value.clone());
            if let Some(state) = state {
                event.headers.insert(TRACESTATE, state.clone());
            }
        }
        Some(SendTrace { span })
    }

    pub(crate) fn span(&self) -> tracing::Span {
        self.span.clone()
    }

    /// Records where a single event went, or why the send failed.
    pub(crate) fn finish(&self, outcome: std::result::Result<&[Receipt], &crate::Error>) {
        match outcome {
            Ok([receipt]) => {
                if let Some(p) = &receipt.partition {
                    self.span
                        .record("messaging.destination.partition.id", p.as_str());
                }
                if let Some(p) = &receipt.position {
                    self.span.record("messaging.message.id", p.as_str());
                }
            }
            Ok(_) => {}
            Err(e) => {
                self.span.record("otel.status_code", "ERROR");
                self.span
                    .record("error.type", tracing::field::debug(e.kind()));
            }
        }
    }
}

/// Runs a send inside its trace, when there is one.
pub(crate) async fn traced_send<F>(trace: Option<SendTrace>, send: F) -> Result<Vec<Receipt>>
where
    F: std::future::Future<Output = Result<Vec<Receipt>>>,
{
    use tracing::Instrument;
    match trace {
        None => send.await,
        Some(trace) => {
            let result = send.instrument(trace.span()).await;
            trace.finish(result.as_deref());
            result
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_follows_the_w3c_grammar() {
        // The example of W3C Trace Context §3.2.2.
        let v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (t, s, f) = parse_traceparent(v).unwrap();
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s.to_string(), "00f067aa0ba902b7");
        assert!(f.is_sampled());
        let sc = SpanContext::new(t, s, f, true, TraceState::default());
        assert_eq!(format_traceparent(&sc).as_bytes(), v);
        for bad in [
            &b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"[..], // v00 is exact
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // forbidden version
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero span id
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // upper case
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",    // short
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // separator
            b"\xff\xfe",
        ] {
            assert!(
                parse_traceparent(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // A later version is read by its first fields.
        assert!(
            parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what")
                .is_some()
        );
        assert!(
            parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01what")
                .is_none()
        );
    }

    #[test]
    fn headers_round_trip_with_tracestate() {
        let mut headers = Headers::new();
        headers.append(
            TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        );
        headers.append(TRACESTATE, "congo=t61rcWkgMzE");
        headers.append(TRACESTATE, "rojo=00f067aa0ba902b7");
        let sc = extract(&headers).unwrap();
        assert!(sc.is_remote());
        assert!(!sc.is_sampled());
        assert_eq!(sc.trace_state().get("rojo"), Some("00f067aa0ba902b7"));
        let mut out = Headers::new();
        inject(&sc, &mut out);
        assert_eq!(
            out.get(TRACEPARENT).unwrap().as_ref(),
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
        assert_eq!(
            out.get(TRACESTATE).unwrap().as_ref(),
            b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        );
        // A malformed tracestate does not cost the traceparent.
        let mut headers = Headers::new();
        headers.append(
            TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        headers.append(TRACESTATE, "not a list entry");
        assert!(extract(&headers).is_some());
        assert!(extract(&Headers::new()).is_none());
    }
}

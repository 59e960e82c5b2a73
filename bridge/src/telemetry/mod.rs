//! Trace spans of a route, after OpenTelemetry's messaging conventions, and the
//! `[daemon.tracing]` section that turns them on.
//!
//! Per batch, when a route has a [`RouteTracer`]:
//! - `receive {source stream}` (kind client): the batch taken from the source, with
//!   `messaging.batch.message_count` and links to the creation context of each event that has
//!   one (the producer's `traceparent`);
//! - `process {source stream}` (kind consumer), for each event with a creation context: a
//!   child of that context, so the hop is in the producer's trace, and linked to it; it lasts
//!   until the sink confirmed the event and the source was acked;
//! - `send {sink stream}` (kind producer) for each write to the sink, linked to the creation
//!   contexts of the events it carries.
//!
//! Every span has `messaging.system`, `messaging.destination.name` and `tributary.route`;
//! source spans also `messaging.consumer.group.name`, and process spans the partition and
//! position. The events keep their `traceparent`: the creation context travels unchanged to
//! the sink, so a consumer there continues the producer's trace. A route without a tracer
//! makes no span at all.

pub mod config;

use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer,
};
use opentelemetry::{Context, KeyValue};
use std::sync::Arc;
use std::time::SystemTime;
use tributary::otel::messaging_system;
use tributary::{Delivery, Event};

use crate::route::RouteSpec;

/// Links a span carries at most: the SDK's default limit, so none is dropped silently.
const MAX_LINKS: usize = 128;

/// The tracer a route makes its spans with. Cloning shares it.
#[derive(Clone)]
pub struct RouteTracer(Arc<BoxedTracer>);

impl RouteTracer {
    /// A route tracer from any OpenTelemetry tracer (an SDK tracer, a test's in-memory one).
    pub fn new<T>(tracer: T) -> Self
    where
        T: Tracer + Send + Sync + 'static,
        T::Span: Send + Sync + 'static,
    {
        RouteTracer(Arc::new(BoxedTracer::new(Box::new(tracer))))
    }

    /// The tracer of the process-wide provider (`opentelemetry::global`), which the `tributary`
    /// binary sets up from `[daemon.tracing]`.
    pub fn global() -> Self {
        RouteTracer(Arc::new(opentelemetry::global::tracer("tributary-bridge")))
    }
}

impl std::fmt::Debug for RouteTracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteTracer")
    }
}

fn remote_parent(context: &SpanContext) -> Context {
    Context::new().with_remote_span_context(context.clone())
}

fn links_of<'a>(contexts: impl Iterator<Item = SpanContext> + 'a) -> Vec<Link> {
    contexts.take(MAX_LINKS).map(Link::with_context).collect()
}

/// The spans of one batch.
pub struct BatchTrace {
    tracer: RouteTracer,
    route: String,
    receive: SpanContext,
    /// One per event that had a creation context, ended by [`BatchTrace::finish`].
    process: Vec<BoxedSpan>,
}

impl BatchTrace {
    /// Records the `receive` span of a batch taken from the source since `started`, and opens
    /// a `process` span for each of its events that carries a creation context.
    pub fn start(
        tracer: &RouteTracer,
        spec: &RouteSpec,
        batch: &[Delivery],
        started: SystemTime,
    ) -> BatchTrace {
        let system = messaging_system(spec.source.scheme());
        let common = || {
            vec![
                KeyValue::new("messaging.system", system),
                KeyValue::new("messaging.destination.name", spec.source_stream.clone()),
                KeyValue::new("messaging.consumer.group.name", spec.group.clone()),
                KeyValue::new("tributary.route", spec.name.clone()),
            ]
        };
        let mut creation = Vec::new();
        let mut process = Vec::new();
        for delivery in batch {
            let Some(context) = delivery.event.trace_context() else {
                continue;
            };
            let mut attributes = common();
            attributes.push(KeyValue::new("messaging.operation.type", "process"));
            attributes.push(KeyValue::new("messaging.operation.name", "process"));
            if let Some(p) = &delivery.partition {
                attributes.push(KeyValue::new(
                    "messaging.destination.partition.id",
                    p.to_string(),
                ));
            }
            if let Some(p) = &delivery.position {
                attributes.push(KeyValue::new("messaging.message.id", p.to_string()));
            }
            let span = tracer
                .0
                .span_builder(format!("process {}", spec.source_stream))
                .with_kind(SpanKind::Consumer)
                .with_start_time(started)
                .with_attributes(attributes)
                .with_links(vec![Link::with_context(context.clone())])
                .start_with_context(tracer.0.as_ref(), &remote_parent(&context));
            process.push(span);
            creation.push(context);
        }
        let mut attributes = common();
        attributes.push(KeyValue::new("messaging.operation.type", "receive"));
        attributes.push(KeyValue::new("messaging.operation.name", "receive"));
        attributes.push(KeyValue::new(
            "messaging.batch.message_count",
            batch.len() as i64,
        ));
        let mut receive = tracer
            .0
            .span_builder(format!("receive {}", spec.source_stream))
            .with_kind(SpanKind::Client)
            .with_start_time(started)
            .with_attributes(attributes)
            .with_links(links_of(creation.into_iter()))
            .start_with_context(tracer.0.as_ref(), &Context::new());
        let receive_context = receive.span_context().clone();
        receive.end();
        BatchTrace {
            tracer: tracer.clone(),
            route: spec.name.clone(),
            receive: receive_context,
            process,
        }
    }

    /// Opens the `send` span of one write of `events` to the sink stream `stream`; end it
    /// with [`SendTrace::end`].
    pub fn send(&self, sink_scheme: &str, stream: &str, events: &[Event]) -> SendTrace {
        let mut attributes = vec![
            KeyValue::new("messaging.system", messaging_system(sink_scheme)),
            KeyValue::new("messaging.destination.name", stream.to_owned()),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.operation.name", "send"),
            KeyValue::new("tributary.route", self.route.clone()),
        ];
        if events.len() > 1 {
            attributes.push(KeyValue::new(
                "messaging.batch.message_count",
                events.len() as i64,
            ));
        }
        let span = self
            .tracer
            .0
            .span_builder(format!("send {stream}"))
            .with_kind(SpanKind::Producer)
            .with_attributes(attributes)
            .with_links(links_of(events.iter().filter_map(Event::trace_context)))
            .start_with_context(self.tracer.0.as_ref(), &remote_parent(&self.receive));
        SendTrace(span)
    }

    /// Ends the `process` spans: the batch is written and acked, or it failed with `error`.
    pub fn finish(self, error: Option<&tributary::Error>) {
        for mut span in self.process {
            if let Some(error) = error {
                mark_failed(&mut span, error);
            }
            span.end();
        }
    }
}

fn mark_failed(span: &mut BoxedSpan, error: &tributary::Error) {
    span.set_attribute(KeyValue::new("error.type", format!("{:?}", error.kind())));
    span.set_status(Status::error(error.to_string()));
}

/// One write to the sink.
pub struct SendTrace(BoxedSpan);

impl SendTrace {
    /// Ends the span, marked failed when the write failed.
    pub fn end(mut self, outcome: Result<(), &tributary::Error>) {
        if let Err(error) = outcome {
            mark_failed(&mut self.0, error);
        }
        self.0.end();
    }
}

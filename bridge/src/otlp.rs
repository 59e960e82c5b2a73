//! The OTLP exporter the daemon installs when its file has `[daemon.tracing]`: part of the
//! binary only, so programs embedding the bridge library do not compile it.

use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tributary::{Error, Result};
use tributary_bridge::telemetry::config::{Protocol, TracingPlan};

/// The installed exporter; [`Exporter::shutdown`] sends what is still buffered.
pub struct Exporter {
    provider: SdkTracerProvider,
}

/// Builds the exporter and makes it the process's tracer provider (which
/// `RouteTracer::global` uses). Must run inside the tokio runtime (the gRPC client lives on it).
pub fn install(plan: &TracingPlan) -> Result<Exporter> {
    let failed = |e: &dyn std::fmt::Display| {
        Error::config(format!(
            "daemon.tracing: cannot set up the OTLP exporter: {e}"
        ))
    };
    let exporter = match plan.protocol {
        Protocol::HttpProtobuf => {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_timeout(plan.timeout)
                .with_headers(plan.headers.iter().cloned().collect());
            if let Some(url) = plan.traces_url() {
                builder = builder.with_endpoint(url);
            }
            builder.build().map_err(|e| failed(&e))?
        }
        Protocol::Grpc => {
            let mut headers = http::HeaderMap::new();
            for (name, value) in &plan.headers {
                let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| failed(&e))?;
                let value = http::HeaderValue::from_str(value)
                    .map_err(|_| failed(&format!("the value of header `{name}` is not valid")))?;
                headers.insert(name, value);
            }
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_timeout(plan.timeout)
                .with_metadata(
                    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers),
                );
            if let Some(url) = plan.traces_url() {
                builder = builder.with_endpoint(url);
            }
            builder.build().map_err(|e| failed(&e))?
        }
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        // Traces an event brings are followed as their producer decided; new ones are sampled.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            plan.sampling,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(plan.service_name.clone())
                .build(),
        )
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(Exporter { provider })
}

impl Exporter {
    /// Exports what is buffered and stops. Blocking (the exporter has its own thread), so it
    /// runs off the async workers.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let outcome = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "spans not all exported at shutdown"),
            Err(e) => tracing::warn!(error = %e, "span exporter shutdown failed"),
        }
    }
}

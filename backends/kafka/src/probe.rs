//! The first contact with the cluster: waits for a broker to answer, and tells a refused
//! login or a failed TLS handshake (no point retrying) from a broker that is not there yet.
//!
//! librdkafka reports authentication and TLS failures only as error events on the client's
//! main queue, while the metadata request that triggered them merely times out. The probe is
//! a client of its own whose main queue it serves between short metadata attempts, so a wrong
//! password is reported in well under a second, not after the whole `timeout`.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{BaseProducer, NoCustomPartitioner, Producer as _, ProducerContext};
use tributary::{Error, Result};

use crate::config::KafkaConfig;
use crate::error::map;

/// How long one metadata attempt may take before the probe looks at the error events again.
const STEP: Duration = Duration::from_millis(250);

/// Records the first authentication or TLS failure librdkafka reports.
#[derive(Default)]
struct Watch {
    refused: Mutex<Option<(RDKafkaErrorCode, String)>>,
}

impl ClientContext for Watch {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        match code {
            Some(
                code @ (RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::SSL),
            ) => {
                self.refused
                    .lock()
                    .get_or_insert_with(|| (code, reason.to_string()));
            }
            _ => tracing::debug!(error = %error, reason, "kafka: while connecting"),
        }
    }
}

impl ProducerContext<NoCustomPartitioner> for Watch {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// Fetches the cluster's metadata within the configuration's `timeout`; fails at once with
/// `Unauthorized` when the cluster refuses the credentials, or `Config` when TLS fails.
/// Blocking: call it off the async runtime.
pub(crate) fn cluster_metadata(config: &KafkaConfig) -> Result<Metadata> {
    let probe: BaseProducer<Watch> = config
        .admin()
        .create_with_context(Watch::default())
        .map_err(|e| map(e, &format!("connect to {}", config.shown())))?;
    let deadline = Instant::now() + config.timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = probe.client().fetch_metadata(None, left.min(STEP));
        // Serves the main queue: error events reach `Watch::error`.
        probe.poll(Duration::ZERO);
        if let Some((code, reason)) = probe.context().refused.lock().take() {
            return Err(refused(config, code, &reason));
        }
        match attempt {
            Ok(metadata) => return Ok(metadata),
            Err(e) if Instant::now() >= deadline => {
                return Err(Error::unavailable(format!(
                    "no Kafka broker answered at {} within {:?} (option `timeout`): {}",
                    config.bootstrap,
                    config.timeout,
                    map(e, "fetch Kafka metadata").message()
                ))
                .with_retryable(true));
            }
            Err(_) => {}
        }
    }
}

fn refused(config: &KafkaConfig, code: RDKafkaErrorCode, reason: &str) -> Error {
    // librdkafka's reasons name the mechanism and the broker, not the password; mask every
    // secret value of the configuration anyway, should one ever be echoed.
    let reason = config.mask_secrets(reason);
    match code {
        RDKafkaErrorCode::SSL => Error::config(format!(
            "TLS with the Kafka broker at {} failed: {reason} (check `rdkafka.ssl.ca.location` and the other `ssl.` options)",
            config.bootstrap
        )),
        _ => Error::unauthorized(format!(
            "the Kafka broker at {} refused the credentials: {reason}",
            config.bootstrap
        )),
    }
}

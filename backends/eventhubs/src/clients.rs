//! Opening the SDK's clients the way the configuration says (credential, custom endpoint).

use std::sync::Arc;

use azure_messaging_eventhubs::{ConsumerClient, ProducerClient};

use crate::config::{Credential, EventHubsConfig};
use crate::error::deadline;

/// The credential the SDK takes when the configuration has no connection string.
pub(crate) fn token_credential(
    config: &EventHubsConfig,
) -> tributary::Result<Option<Arc<dyn azure_core::credentials::TokenCredential>>> {
    Ok(match &config.credential {
        Credential::ConnectionString(_) => None,
        Credential::Token(credential) => Some(credential.clone()),
        Credential::DefaultChain => {
            Some(Arc::new(crate::auth::DefaultChain::new().map_err(|e| {
                tributary::Error::config(format!("cannot set up Microsoft Entra ID: {e}"))
            })?))
        }
    })
}

pub(crate) async fn producer(
    config: &EventHubsConfig,
    credential: &Option<Arc<dyn azure_core::credentials::TokenCredential>>,
    hub: &str,
) -> tributary::Result<ProducerClient> {
    let mut builder = ProducerClient::builder();
    if let Some(endpoint) = &config.endpoint {
        builder = builder.with_custom_endpoint(endpoint.clone());
    }
    if let Some(id) = &config.application_id {
        builder = builder.with_application_id(id.clone());
    }
    let what = || {
        format!(
            "connect to Event Hubs namespace {} for `{hub}`",
            config.namespace
        )
    };
    match (&config.credential, credential) {
        (Credential::ConnectionString(text), _) => {
            deadline(
                config.timeout,
                what,
                builder.open_with_connection_string(text, Some(hub)),
            )
            .await
        }
        (_, Some(credential)) => {
            deadline(
                config.timeout,
                what,
                builder.open(&config.namespace, hub, credential.clone()),
            )
            .await
        }
        (_, None) => unreachable!("token_credential gives one for every other credential"),
    }
}

pub(crate) async fn consumer(
    config: &EventHubsConfig,
    credential: &Option<Arc<dyn azure_core::credentials::TokenCredential>>,
    hub: &str,
    consumer_group: &str,
) -> tributary::Result<ConsumerClient> {
    let mut builder = ConsumerClient::builder().with_consumer_group(consumer_group.to_string());
    if let Some(endpoint) = &config.endpoint {
        builder = builder.with_custom_endpoint(endpoint.clone());
    }
    if let Some(id) = &config.application_id {
        builder = builder.with_application_id(id.clone());
    }
    let what = || {
        format!(
            "connect to Event Hubs namespace {} for `{hub}`, consumer group `{consumer_group}`",
            config.namespace
        )
    };
    match (&config.credential, credential) {
        (Credential::ConnectionString(text), _) => {
            deadline(
                config.timeout,
                what,
                builder.open_with_connection_string(text, Some(hub)),
            )
            .await
        }
        (_, Some(credential)) => {
            deadline(
                config.timeout,
                what,
                builder.open(&config.namespace, hub.to_string(), credential.clone()),
            )
            .await
        }
        (_, None) => unreachable!("token_credential gives one for every other credential"),
    }
}

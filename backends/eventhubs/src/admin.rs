//! Streams: an event hub is a stream, its partitions are the stream's partitions. The data
//! plane (AMQP) can read a hub's and a partition's properties but cannot create, delete or
//! enumerate hubs: that is Azure Resource Manager's job (portal, `az eventhubs eventhub
//! create`, Bicep/Terraform).

use std::collections::HashMap;
use std::sync::Arc;

use azure_messaging_eventhubs::ProducerClient;
use tributary::{Error, PartitionId, PartitionInfo, Position, Result, StreamInfo};

use crate::clients::ClientAuth;
use crate::config::EventHubsConfig;
use crate::error::deadline;

/// One management connection per hub, opened on first use and kept until the backend closes.
#[derive(Default)]
pub(crate) struct Management {
    clients: tokio::sync::Mutex<HashMap<String, Arc<ProducerClient>>>,
}

/// What the service says about a hub.
pub(crate) struct HubProperties {
    pub partition_ids: Vec<String>,
}

/// What the service says about a partition.
#[derive(Debug, Clone)]
pub(crate) struct PartitionProperties {
    pub beginning_sequence_number: i64,
    pub last_sequence_number: i64,
    pub is_empty: bool,
}

impl Management {
    async fn client(
        &self,
        config: &EventHubsConfig,
        auth: &ClientAuth,
        hub: &str,
    ) -> Result<Arc<ProducerClient>> {
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(hub) {
            return Ok(client.clone());
        }
        let client = Arc::new(crate::clients::producer(config, auth, hub).await?);
        clients.insert(hub.to_string(), client.clone());
        Ok(client)
    }

    pub(crate) async fn hub(
        &self,
        config: &EventHubsConfig,
        auth: &ClientAuth,
        hub: &str,
    ) -> Result<HubProperties> {
        let client = self.client(config, auth, hub).await?;
        let properties = deadline(
            config.timeout,
            || format!("read the properties of event hub `{hub}`"),
            client.get_eventhub_properties(),
        )
        .await
        .map_err(|e| not_found_names(e, hub, &config.namespace))?;
        let mut partition_ids = properties.partition_ids;
        partition_ids.sort_by(|a, b| {
            PartitionId::new(a)
                .as_index()
                .cmp(&PartitionId::new(b).as_index())
                .then_with(|| a.cmp(b))
        });
        Ok(HubProperties { partition_ids })
    }

    pub(crate) async fn partition(
        &self,
        config: &EventHubsConfig,
        auth: &ClientAuth,
        hub: &str,
        partition: &str,
    ) -> Result<PartitionProperties> {
        let client = self.client(config, auth, hub).await?;
        let properties = deadline(
            config.timeout,
            || format!("read partition {partition} of event hub `{hub}`"),
            client.get_partition_properties(partition),
        )
        .await
        .map_err(|e| not_found_names(e, hub, &config.namespace))?;
        Ok(PartitionProperties {
            beginning_sequence_number: properties.beginning_sequence_number,
            last_sequence_number: properties.last_enqueued_sequence_number,

            is_empty: properties.is_empty,
        })
    }

    pub(crate) async fn describe(
        &self,
        config: &EventHubsConfig,
        auth: &ClientAuth,
        hub: &str,
    ) -> Result<StreamInfo> {
        let properties = self.hub(config, auth, hub).await?;
        let mut partitions = Vec::with_capacity(properties.partition_ids.len());
        for id in properties.partition_ids {
            let p = self.partition(config, auth, hub, &id).await?;
            partitions.push(PartitionInfo {
                id: PartitionId::new(&id),
                earliest: (!p.is_empty)
                    .then(|| Position::new(p.beginning_sequence_number.to_string())),
                next: Some(Position::new(
                    (if p.is_empty && p.last_sequence_number < p.beginning_sequence_number {
                        p.beginning_sequence_number
                    } else {
                        p.last_sequence_number + 1
                    })
                    .to_string(),
                )),
            });
        }
        Ok(StreamInfo {
            name: hub.to_string(),
            partitions,
        })
    }

    pub(crate) async fn close(&self) {
        let clients: Vec<_> = self.clients.lock().await.drain().map(|(_, c)| c).collect();
        for client in clients {
            if let Ok(client) = Arc::try_unwrap(client) {
                let _ = client.close().await;
            }
        }
    }
}

fn not_found_names(error: Error, hub: &str, namespace: &str) -> Error {
    if error.kind() == tributary::ErrorKind::NotFound {
        Error::not_found(format!(
            "event hub `{hub}` does not exist in namespace {namespace} ({}); hubs are created in Azure (portal, `az eventhubs eventhub create`, Bicep/Terraform), not by tributary",
            error.message()
        ))
    } else {
        error
    }
}

/// `create_stream` and `delete_stream`: what to do instead.
pub(crate) fn unsupported(what: &str, hub: &str) -> Error {
    Error::unsupported(format!(
        "Event Hubs cannot {what} event hub `{hub}` through its data plane; manage hubs in Azure: the portal, `az eventhubs eventhub {}`, or Bicep/Terraform (the emulator creates hubs on first use or from its --config)",
        if what == "create" {
            "create --partition-count N"
        } else {
            "delete"
        }
    ))
}

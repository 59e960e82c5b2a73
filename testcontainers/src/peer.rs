//! Which servers there are and where they come from.

use std::fmt;

use crate::Server;

/// The servers tributary is tested against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// Apache Kafka 4.x, single KRaft node.
    Kafka,
    /// Apache Pulsar 4.0.x standalone.
    Pulsar,
    /// Google Cloud Pub/Sub (Google's `pstest` fake, or the gcloud emulator in Docker).
    PubSub,
    /// AWS Kinesis (the ferrokinesis emulator).
    Kinesis,
    /// Azure Event Hubs (the project's own AMQP emulator, `tributary-eventhubs-emulator`).
    EventHubs,
    /// Azure Blob Storage (Azurite), where the Event Hubs backend keeps its groups' ownership
    /// and checkpoints. Its URL is the blob endpoint of the development account
    /// ([`AZURITE_ACCOUNT`], [`AZURITE_ACCOUNT_KEY`]): `http://127.0.0.1:P/devstoreaccount1`.
    Azurite,
    /// Amazon DynamoDB (dynalite), where the Kinesis backend keeps its group's leases.
    DynamoDb,
}

/// The storage account Azurite serves (its well-known development account).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// The published key of Azurite's development account (not a secret: every Azurite has it).
pub const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A storage connection string for an Azurite [`Server`] (the form Microsoft's SDKs take).
pub fn azurite_connection_string(server: &Server) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_ACCOUNT_KEY};BlobEndpoint={};",
        server.url()
    )
}

impl Peer {
    /// Every peer, in a fixed order.
    pub const ALL: [Peer; 7] = [
        Peer::Kafka,
        Peer::Pulsar,
        Peer::PubSub,
        Peer::Kinesis,
        Peer::EventHubs,
        Peer::Azurite,
        Peer::DynamoDb,
    ];

    /// Lower-case name used in file names, environment variables and installer arguments.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Kafka => "kafka",
            Peer::Pulsar => "pulsar",
            Peer::PubSub => "pubsub",
            Peer::Kinesis => "kinesis",
            Peer::EventHubs => "eventhubs",
            Peer::Azurite => "azurite",
            Peer::DynamoDb => "dynamodb",
        }
    }

    /// The variable that gives this peer's URL in external mode.
    pub fn url_variable(self) -> &'static str {
        match self {
            Peer::Kafka => "TRIBUTARY_KAFKA_URL",
            Peer::Pulsar => "TRIBUTARY_PULSAR_URL",
            Peer::PubSub => "TRIBUTARY_PUBSUB_URL",
            Peer::Kinesis => "TRIBUTARY_KINESIS_URL",
            Peer::EventHubs => "TRIBUTARY_EVENTHUBS_URL",
            Peer::Azurite => "TRIBUTARY_AZURITE_URL",
            Peer::DynamoDb => "TRIBUTARY_DYNAMODB_URL",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Peer::Kafka => "Kafka",
            Peer::Pulsar => "Pulsar",
            Peer::PubSub => "Pub/Sub",
            Peer::Kinesis => "Kinesis",
            Peer::EventHubs => "Event Hubs",
            Peer::Azurite => "Azurite",
            Peer::DynamoDb => "DynamoDB",
        })
    }
}

/// Where servers come from (`TRIBUTARY_PEERS_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Installed processes from the peers cache.
    Native,
    /// Official container images through the `docker` command.
    Docker,
    /// URLs given in environment variables.
    External,
}

impl Mode {
    /// Reads `TRIBUTARY_PEERS_MODE`; unset means [`Mode::Native`].
    pub fn from_env() -> Result<Mode, String> {
        match std::env::var("TRIBUTARY_PEERS_MODE").as_deref() {
            Err(_) | Ok("") | Ok("native") => Ok(Mode::Native),
            Ok("docker") => Ok(Mode::Docker),
            Ok("external") => Ok(Mode::External),
            Ok(other) => Err(format!(
                "TRIBUTARY_PEERS_MODE={other:?} is not a mode; use native, docker or external"
            )),
        }
    }
}

//! `tributary streams URL list|create|describe|delete`.

use tributary::{Result, StreamSpec};

/// Options of `tributary streams`.
#[derive(clap::Args)]
pub struct StreamsArgs {
    /// Backend URL.
    url: String,
    #[command(subcommand)]
    action: StreamsAction,
}

/// What `tributary streams` does.
#[derive(clap::Subcommand)]
pub enum StreamsAction {
    /// List stream names.
    List,
    /// Create a stream.
    Create {
        /// Stream name.
        name: String,
        /// Number of partitions.
        #[arg(long, short, default_value_t = 1)]
        partitions: u32,
    },
    /// Show partitions and positions.
    Describe {
        /// Stream name.
        name: String,
    },
    /// Delete a stream and its data.
    Delete {
        /// Stream name.
        name: String,
    },
}

/// Runs `tributary streams`.
pub async fn run(args: StreamsArgs) -> Result<()> {
    let StreamsArgs { url, action } = args;
    let url = url.as_str();
    let backend = tributary::connect(url).await?;
    match action {
        StreamsAction::List => {
            for name in backend.list_streams().await? {
                println!("{name}");
            }
        }
        StreamsAction::Create { name, partitions } => {
            backend
                .create_stream(&name, StreamSpec::with_partitions(partitions))
                .await?;
            eprintln!("created stream `{name}` with {partitions} partition(s)");
        }
        StreamsAction::Describe { name } => {
            let info = backend.describe_stream(&name).await?;
            println!("stream {}", info.name);
            println!("{:>10}  {:>20}  {:>20}", "partition", "earliest", "next");
            for p in info.partitions {
                println!(
                    "{:>10}  {:>20}  {:>20}",
                    p.id.to_string(),
                    p.earliest.map_or("-".into(), |x| x.to_string()),
                    p.next.map_or("-".into(), |x| x.to_string())
                );
            }
        }
        StreamsAction::Delete { name } => {
            backend.delete_stream(&name).await?;
            eprintln!("deleted stream `{name}`");
        }
    }
    backend.close().await
}

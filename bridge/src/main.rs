//! `tributary`: produce, consume, administer streams, and run the bridge, on any backend URL.

use clap::{Parser, Subcommand, ValueEnum};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tributary::{
    Backend, ConsumerExt, ConsumerOptions, Error, ErrorKind, Event, Result, StartPosition,
    StreamSpec,
};
use tributary_bridge::config::Plan;
use tributary_bridge::route::{self, RouteSpec, RouteStats, tokio_util_free::CancelToken};
use tributary_bridge::{demo, json};

mod cmd_conformance;

#[derive(Parser)]
#[command(
    name = "tributary",
    version,
    about = "Produce, consume and replicate event streams on Kafka, Pulsar, Kinesis, Pub/Sub, Event Hubs and local storage",
    after_help = "URLs: memory://  file:///path  (more schemes as their backends are compiled in)\nExample: tributary demo"
)]
struct Cli {
    /// Log filter (also RUST_LOG), e.g. `info` or `tributary=debug`.
    #[arg(long, global = true, default_value = "warn", env = "TRIBUTARY_LOG")]
    log: String,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    /// One event per line: the line is the payload.
    Raw,
    /// One JSON object per line: key, payload, headers, timestamp (base64 for binary).
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Send events read from stdin, one per line.
    Produce {
        /// Backend URL, e.g. file:///var/lib/tributary.
        url: String,
        /// Stream to write to.
        stream: String,
        /// How to read each line.
        #[arg(long, value_enum, default_value = "raw")]
        format: Format,
        /// Key for every raw event.
        #[arg(long)]
        key: Option<String>,
        /// Events per batch sent to the backend.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        batch: u32,
        /// Print `partition position` for each stored event on stdout.
        #[arg(long)]
        receipts: bool,
    },
    /// Print events of a stream and ack them.
    Consume {
        /// Backend URL.
        url: String,
        /// Stream to read.
        stream: String,
        /// Consumer group; a new one per run unless given (then it resumes where it stopped).
        #[arg(long, short)]
        group: Option<String>,
        /// Where a group without progress starts: earliest, latest, an RFC 3339 time, @<epoch ms>, or a position.
        #[arg(long, default_value = "earliest")]
        from: String,
        /// Exit after this many events.
        #[arg(short = 'n', long)]
        count: Option<u64>,
        /// Exit after no event arrived for this long (e.g. 2s).
        #[arg(long)]
        idle_exit: Option<humantime::Duration>,
        /// Output format.
        #[arg(long, value_enum, default_value = "raw")]
        format: Format,
    },
    /// Administer streams.
    Streams {
        /// Backend URL.
        url: String,
        #[command(subcommand)]
        action: StreamsAction,
    },
    /// Replicate streams until SIGTERM/Ctrl-C (at-least-once, per-key order kept): every route
    /// of a configuration file (`--config FILE`), or one route given by flags.
    #[command(args_conflicts_with_subcommands = true)]
    Bridge {
        #[command(subcommand)]
        action: Option<BridgeAction>,
        /// Configuration file (TOML, or YAML when named *.yaml or *.yml) with any number of
        /// routes; see `bridge/src/config.rs`.
        #[arg(long, conflicts_with_all = ["from", "from_stream", "to", "to_stream"])]
        config: Option<std::path::PathBuf>,
        /// Source backend URL.
        #[arg(long, required_unless_present = "config")]
        from: Option<String>,
        /// Source stream.
        #[arg(long, required_unless_present = "config")]
        from_stream: Option<String>,
        /// Sink backend URL.
        #[arg(long, required_unless_present = "config")]
        to: Option<String>,
        /// Sink stream (defaults to the source stream's name).
        #[arg(long)]
        to_stream: Option<String>,
        /// Source consumer group (progress is kept under it).
        #[arg(long, default_value = "tributary-bridge")]
        group: String,
        /// Where a new group starts.
        #[arg(long, default_value = "earliest")]
        start: String,
        /// Largest batch written to the sink.
        #[arg(long, default_value_t = 500)]
        max_batch: usize,
    },
    /// Run the bridge on the embedded local backend: generate sample orders, replicate them,
    /// and verify every event arrived in per-key order.
    Demo {
        /// Number of sample events.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Keep the demo's streams in this directory (file backend) instead of memory.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Run the conformance suite against a backend URL (your own cluster or account) and
    /// print its table; exit status 0 only when no case failed.
    Conformance(cmd_conformance::ConformanceArgs),
}

#[derive(Subcommand, Debug)]
enum BridgeAction {
    /// Check a configuration file without connecting to anything; names every wrong option.
    Validate {
        /// Configuration file.
        file: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum StreamsAction {
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

fn main() {
    let cli = Cli::parse();
    tributary_bridge::backends::register();
    // The daemon's file is read before logging starts, because it may ask for JSON logs;
    // its errors are reported once the command runs.
    let daemon_plan = match &cli.command {
        Command::Bridge {
            action: None,
            config: Some(file),
            ..
        } => Some(tributary_bridge::config::load(file)),
        _ => None,
    };
    let json_logs = matches!(&daemon_plan, Some(Ok(plan)) if plan.log_json);
    let secrets = match &daemon_plan {
        Some(Ok(plan)) => plan.secrets.clone(),
        _ => Default::default(),
    };
    init_logging(&cli.log, cli.log_json || json_logs, secrets);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(run(cli.command, daemon_plan)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            match e.kind() {
                ErrorKind::Config => 2,
                _ => 1,
            }
        }
    };
    runtime.shutdown_timeout(Duration::from_secs(2));
    std::process::exit(code);
}

/// Logs go to stderr with every value the daemon's file took from `${VAR}` replaced by the
/// reference.
fn init_logging(filter: &str, json: bool, secrets: tributary_bridge::config::Secrets) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| filter.to_owned());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(secrets.stderr_writer());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// `daemon_plan` is the loaded `bridge --config` file, when that is the command.
async fn run(command: Command, daemon_plan: Option<Result<Plan>>) -> Result<()> {
    match command {
        Command::Produce {
            url,
            stream,
            format,
            key,
            batch,
            receipts,
        } => produce(&url, &stream, format, key, batch as usize, receipts).await,
        Command::Consume {
            url,
            stream,
            group,
            from,
            count,
            idle_exit,
            format,
        } => {
            consume(
                &url,
                &stream,
                group,
                &from,
                count,
                idle_exit.map(Into::into),
                format,
            )
            .await
        }
        Command::Streams { url, action } => streams(&url, action).await,
        Command::Bridge {
            action: Some(BridgeAction::Validate { file }),
            ..
        } => {
            let plan = tributary_bridge::config::load(&file)?;
            for route in &plan.routes {
                println!("{}", tributary_bridge::daemon::describe(route));
            }
            println!("{}: ok, {} route(s)", file.display(), plan.routes.len());
            Ok(())
        }
        Command::Bridge {
            config: Some(file), ..
        } => match daemon_plan {
            Some(plan) => run_daemon(plan?).await,
            None => run_daemon(tributary_bridge::config::load(&file)?).await,
        },
        Command::Bridge {
            from: Some(from),
            from_stream: Some(from_stream),
            to: Some(to),
            to_stream,
            group,
            start,
            max_batch,
            ..
        } => {
            bridge(
                &from,
                &from_stream,
                &to,
                to_stream.as_deref().unwrap_or(&from_stream),
                group,
                &start,
                max_batch,
            )
            .await
        }
        Command::Bridge { .. } => Err(Error::config(
            "bridge needs --config FILE, or --from, --from-stream and --to",
        )),
        Command::Demo { events, dir } => run_demo(events, dir).await,
        Command::Conformance(args) => cmd_conformance::run(args).await,
    }
}

/// A `\r` progress line on stderr, only when stderr is a terminal.
struct Progress {
    enabled: bool,
    last: Instant,
}

impl Progress {
    fn new() -> Self {
        Progress {
            enabled: std::io::stderr().is_terminal(),
            last: Instant::now(),
        }
    }
    fn show(&mut self, line: impl FnOnce() -> String) {
        if self.enabled && self.last.elapsed() >= Duration::from_millis(200) {
            self.last = Instant::now();
            eprint!("\r\x1b[2K{}", line());
        }
    }
    fn clear(&self) {
        if self.enabled {
            eprint!("\r\x1b[2K");
        }
    }
}

fn ctrl_c() -> CancelToken {
    let token = CancelToken::default();
    let t = token.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            t.cancel();
        }
    });
    #[cfg(unix)]
    {
        let t = token.clone();
        tokio::spawn(async move {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                term.recv().await;
                t.cancel();
            }
        });
    }
    token
}

async fn produce(
    url: &str,
    stream: &str,
    format: Format,
    key: Option<String>,
    batch_size: usize,
    print_receipts: bool,
) -> Result<()> {
    let backend = tributary::connect(url).await?;
    let max_event_bytes = backend.capabilities().max_event_bytes;
    let producer = backend.producer(stream).await?;
    let mut input = tokio::io::BufReader::new(tokio::io::stdin());
    let started = Instant::now();
    let mut progress = Progress::new();
    let mut stdout = std::io::BufWriter::new(std::io::stdout());
    let (mut sent, mut line_no) = (0u64, 0usize);
    let mut batch = Vec::with_capacity(batch_size);
    // The input line of each event in `batch`, for messages.
    let mut batch_lines: Vec<usize> = Vec::with_capacity(batch_size);
    let mut line = Vec::new();
    let mut eof = false;
    while !eof {
        // Fill a batch from what stdin has ready; send a partial one rather than wait, so a slow
        // writer (a pipe from another process) sees its events stored promptly.
        loop {
            let read = if batch.is_empty() {
                input.read_until(b'\n', &mut line).await
            } else {
                match tokio::time::timeout(
                    Duration::from_millis(2),
                    input.read_until(b'\n', &mut line),
                )
                .await
                {
                    Ok(r) => r,
                    // `read_until` keeps what it read so far in `line`; it goes on next round.
                    Err(_) => break,
                }
            };
            match read {
                // A last line without a newline may have been read partly by an earlier call.
                Ok(0) if line.is_empty() => {
                    eof = true;
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("reading stdin (line {})", line_no + 1),
                        e,
                    ));
                }
            }
            line_no += 1;
            let whole = std::mem::take(&mut line);
            let text = strip_line_end(&whole);
            let event = match format {
                // A raw line is the payload as bytes, whatever they are.
                Format::Raw => {
                    let mut e = Event::new(text.to_vec());
                    if let Some(k) = &key {
                        e = e.with_key(k.clone());
                    }
                    e
                }
                Format::Json => {
                    let text = std::str::from_utf8(text).map_err(|e| {
                        Error::config(format!(
                            "line {line_no}: not valid UTF-8 (byte {}); JSON lines are UTF-8 text, binary values go in `payload_b64`/`key_b64`",
                            e.valid_up_to() + 1
                        ))
                    })?;
                    if text.trim().is_empty() {
                        continue;
                    }
                    json::event_from_json(text, line_no)?
                }
            };
            if let Some(max) = max_event_bytes
                && event.encoded_len() > max
            {
                return Err(Error::too_large(format!(
                    "line {line_no}: event of {} bytes (key + payload + headers) exceeds the limit of {max} bytes of stream `{stream}`; {sent} events before it were stored",
                    event.encoded_len()
                )));
            }
            batch.push(event);
            batch_lines.push(line_no);
            if batch.len() >= batch_size {
                break;
            }
        }
        if batch.is_empty() {
            continue;
        }
        let (first, last) = (batch_lines[0], batch_lines[batch_lines.len() - 1]);
        batch_lines.clear();
        let receipts = producer
            .send_batch(std::mem::take(&mut batch))
            .await
            .map_err(|e| {
                let lines = if first == last {
                    format!("line {first}")
                } else {
                    format!("lines {first}-{last}")
                };
                e.context(format!(
                    "{sent} events stored before; the batch of {lines} failed"
                ))
            })?;
        sent += receipts.len() as u64;
        if print_receipts {
            for r in &receipts {
                let _ = writeln!(
                    stdout,
                    "{} {}",
                    r.partition.as_ref().map_or("-".into(), |p| p.to_string()),
                    r.position.as_ref().map_or("-".into(), |p| p.to_string())
                );
            }
            stdout
                .flush()
                .map_err(|e| Error::io("writing receipts", e))?;
        }
        progress.show(|| {
            format!(
                "produced {sent} events ({:.0}/s)",
                sent as f64 / started.elapsed().as_secs_f64().max(1e-9)
            )
        });
    }
    producer.close().await?;
    backend.close().await?;
    progress.clear();
    eprintln!(
        "produced {sent} events to `{stream}` in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A line without its `\n` or `\r\n`.
fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

async fn consume(
    url: &str,
    stream: &str,
    group: Option<String>,
    from: &str,
    count: Option<u64>,
    idle_exit: Option<Duration>,
    format: Format,
) -> Result<()> {
    let start: StartPosition = from.parse()?;
    // Without -g a run is a one-off reader: its group exists for this run only and is removed
    // when the run ends, so repeated runs leave nothing behind.
    let throwaway = group.is_none();
    let group = group.unwrap_or_else(|| {
        format!(
            "tributary-cli-{}-{}",
            std::process::id(),
            tributary::Timestamp::now().as_millis()
        )
    });
    let backend = tributary::connect(url).await?;
    let consumer = backend
        .consumer(stream, ConsumerOptions::new(group.clone()).start(start))
        .await?;
    let cancel = ctrl_c();
    let mut out = Output {
        writer: std::io::BufWriter::with_capacity(1 << 16, std::io::stdout()),
        pending: Vec::new(),
        written: 0,
    };
    let started = Instant::now();
    let mut progress = Progress::new();
    let limit = count.unwrap_or(u64::MAX);
    let result: Result<()> = async {
        while out.written + (out.pending.len() as u64) < limit {
            // Take what is ready without waiting; once nothing is, make the output so far
            // visible (and acked) before waiting for more.
            let ready = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                d = consumer.receive_timeout(Duration::ZERO) => d,
            };
            // What was printed before an error is acked before the error is reported.
            let ready = match ready {
                Ok(ready) => ready,
                Err(e) => {
                    out.flush_and_ack()?;
                    return Err(e);
                }
            };
            let next = match ready {
                Some(d) => Some(d),
                None => {
                    if !out.flush_and_ack()? {
                        break;
                    }
                    progress.show(|| format!("consumed {} events", out.written));
                    let wait = idle_exit.unwrap_or(Duration::from_millis(100));
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => break,
                        d = consumer.receive_timeout(wait) => d?,
                    }
                }
            };
            let Some(d) = next else {
                if idle_exit.is_some() {
                    break;
                }
                continue;
            };
            let written = match format {
                Format::Raw => out
                    .writer
                    .write_all(&d.event.payload)
                    .and_then(|_| out.writer.write_all(b"\n")),
                Format::Json => writeln!(out.writer, "{}", json::delivery_to_json(stream, &d)),
            };
            match written {
                Ok(()) => out.pending.push(d),
                // The reader went away: stop quietly; this event and those not yet flushed
                // stay unacked, so the group gets them again.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(Error::io("writing stdout", e)),
            }
            if out.pending.len() >= FLUSH_EVERY && !out.flush_and_ack()? {
                break;
            }
        }
        out.flush_and_ack().map(|_| ())
    }
    .await;
    // Unflushed deliveries are dropped unacked: they are redelivered, never lost.
    out.pending.clear();
    let closed = consumer.close().await;
    drop(consumer);
    if throwaway
        && let Some(local) = backend
            .as_any()
            .downcast_ref::<tributary::local::LocalBackend>()
        && let Err(e) = local.delete_group(&group).await
    {
        tracing::warn!(group, error = %e, "could not remove this run's consumer group");
    }
    backend.close().await?;
    progress.clear();
    eprintln!(
        "consumed {} events from `{stream}` in {:.2}s",
        out.written,
        started.elapsed().as_secs_f64()
    );
    result.and(closed)
}

/// Deliveries are acked only once their lines reached stdout (flushed), so a reader that goes
/// away, or a kill, never loses an event for the group.
const FLUSH_EVERY: usize = 1024;

struct Output {
    writer: std::io::BufWriter<std::io::Stdout>,
    /// Written to the buffer, not yet flushed, so not yet acked.
    pending: Vec<tributary::Delivery>,
    /// Flushed and acked.
    written: u64,
}

impl Output {
    /// Flushes and acks what was written; `false` when stdout's reader went away (nothing of
    /// the unflushed part is acked).
    fn flush_and_ack(&mut self) -> Result<bool> {
        match self.writer.flush() {
            Ok(()) => {
                self.written += self.pending.len() as u64;
                for d in self.pending.drain(..) {
                    d.ack();
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.pending.clear();
                Ok(false)
            }
            Err(e) => Err(Error::io("writing stdout", e)),
        }
    }
}

async fn streams(url: &str, action: StreamsAction) -> Result<()> {
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

/// Runs every route of a configuration file until SIGTERM/SIGINT, then drains within the
/// configured deadline.
async fn run_daemon(plan: Plan) -> Result<()> {
    let deadline = plan.shutdown_timeout;
    for route in &plan.routes {
        tracing::info!("{}", tributary_bridge::daemon::describe(route));
    }
    let stop = ctrl_c();
    let running = tributary_bridge::daemon::start(plan).await?;
    if let Some(addr) = running.listening {
        eprintln!("operations endpoint: http://{addr}/metrics /healthz /readyz");
    }
    let started = Instant::now();
    let mut progress = Progress::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => progress.show(|| {
                let total: u64 = running.stats.iter().map(|(_, s)| s.replicated.load(Ordering::Relaxed)).sum();
                let dead: u64 = running.stats.iter().map(|(_, s)| s.dead_lettered.load(Ordering::Relaxed)).sum();
                format!(
                    "{} route(s): replicated {total} events ({:.0}/s), {dead} dead-lettered",
                    running.stats.len(),
                    total as f64 / started.elapsed().as_secs_f64().max(1e-9)
                )
            }),
        }
    }
    progress.clear();
    eprintln!("stopping: draining in-flight batches (deadline {deadline:?})");
    let stats = running.stats.clone();
    running.shutdown(deadline).await?;
    // Read after the drain, so the batches finished during shutdown are counted.
    let summary: Vec<String> = stats
        .iter()
        .map(|(name, s)| {
            format!(
                "{name}: {} replicated, {} dead-lettered, {} filtered, {} loop copies dropped",
                s.replicated.load(Ordering::Relaxed),
                s.dead_lettered.load(Ordering::Relaxed),
                s.filtered.load(Ordering::Relaxed),
                s.looped.load(Ordering::Relaxed)
            )
        })
        .collect();
    eprintln!("stopped cleanly; {}", summary.join("; "));
    Ok(())
}

async fn bridge(
    from: &str,
    from_stream: &str,
    to: &str,
    to_stream: &str,
    group: String,
    start: &str,
    max_batch: usize,
) -> Result<()> {
    let source = tributary::connect(from).await?;
    let sink = tributary::connect(to).await?;
    let stats = Arc::new(RouteStats::default());
    let cancel = ctrl_c();
    let mut spec = RouteSpec::new(
        format!("{from_stream}->{to_stream}"),
        source.clone(),
        from_stream,
        sink.clone(),
        to_stream,
    );
    spec.group = group;
    spec.start = start.parse()?;
    spec.max_batch = max_batch;
    spec.in_flight = spec.in_flight.max(max_batch * 2);
    let started = Instant::now();
    let task = tokio::spawn(route::run_route(spec, stats.clone(), cancel.clone()));
    let mut progress = Progress::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while !task.is_finished() {
        tick.tick().await;
        progress.show(|| {
            let n = stats.replicated.load(Ordering::Relaxed);
            format!(
                "replicated {n} events ({:.0}/s), {} retries",
                n as f64 / started.elapsed().as_secs_f64().max(1e-9),
                stats.retries.load(Ordering::Relaxed)
            )
        });
    }
    let result = task
        .await
        .map_err(|e| Error::other(format!("route task failed: {e}")))?;
    progress.clear();
    eprintln!(
        "replicated {} events from `{from_stream}` to `{to_stream}`",
        stats.replicated.load(Ordering::Relaxed)
    );
    source.close().await?;
    sink.close().await?;
    result
}

async fn run_demo(events: u64, dir: Option<std::path::PathBuf>) -> Result<()> {
    let (source, sink): (Arc<dyn Backend>, Arc<dyn Backend>) = match &dir {
        Some(dir) => {
            let src = format!("file://{}", dir.join("source").display());
            let dst = format!("file://{}", dir.join("sink").display());
            (
                tributary::connect(&src).await?,
                tributary::connect(&dst).await?,
            )
        }
        None => (
            tributary::connect("memory://").await?,
            tributary::connect("memory://").await?,
        ),
    };
    let where_ = match &dir {
        Some(d) => format!("file://{}/{{source,sink}}", d.display()),
        None => "memory://".to_owned(),
    };
    eprintln!(
        "demo: generating {events} orders into `orders` on {where_}, bridging them to `orders-replica`, verifying per-key order"
    );
    let mut progress = Progress::new();
    let report = demo::run(
        source.clone(),
        sink.clone(),
        events,
        |generated, replicated, verified| {
            progress.show(|| {
                format!("generated {generated}  replicated {replicated}  verified {verified}")
            });
        },
    )
    .await?;
    progress.clear();
    source.close().await?;
    sink.close().await?;
    println!(
        "bridged {} of {} events in {:.2}s ({:.0} events/s); per-key order and lineage verified; {} duplicates",
        report.verified,
        report.generated,
        report.elapsed.as_secs_f64(),
        report.verified as f64 / report.elapsed.as_secs_f64().max(1e-9),
        report.duplicates
    );
    Ok(())
}

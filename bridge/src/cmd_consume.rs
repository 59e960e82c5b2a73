//! `tributary consume URL STREAM`: events to stdout, one per line, acked once they are out.

use std::io::Write;
use std::time::{Duration, Instant};
use tributary::cloudevents::{Binding, CloudEvent};
use tributary::{ConsumerExt, ConsumerOptions, Error, Result, StartPosition};
use tributary_bridge::json;

use crate::progress::Progress;
use crate::{Format, ctrl_c, duration_arg};

/// Options of `tributary consume`.
#[derive(clap::Args)]
pub struct ConsumeArgs {
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
    #[arg(long, value_parser = duration_arg)]
    idle_exit: Option<Duration>,
    /// Output format (`cloudevents`: each event, in whichever mode the backend's binding
    /// carries it, as one line of the CloudEvents JSON format; an event that is no CloudEvent
    /// stops the command, unacked).
    #[arg(long, value_enum, default_value = "raw")]
    format: Format,
}

/// Runs `tributary consume`.
pub async fn run(args: ConsumeArgs) -> Result<()> {
    let ConsumeArgs {
        url,
        stream,
        group,
        from,
        count,
        idle_exit,
        format,
    } = args;
    consume(&url, &stream, group, &from, count, idle_exit, format).await
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
    let binding = Binding::for_scheme(backend.scheme());
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
            progress.count("consumed", out.written, count);
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
                Format::Cloudevents => {
                    let line = CloudEvent::from_event(&d.event, binding)
                        .and_then(|ce| ce.to_json())
                        .map_err(|e| {
                            e.context(format!(
                                "stream `{stream}`, partition {}, position {}",
                                d.partition.as_ref().map_or("-".into(), |p| p.to_string()),
                                d.position.as_ref().map_or("-".into(), |p| p.to_string())
                            ))
                        });
                    match line {
                        Ok(line) => out
                            .writer
                            .write_all(&line)
                            .and_then(|_| out.writer.write_all(b"\n")),
                        Err(e) => {
                            out.flush_and_ack()?;
                            return Err(e);
                        }
                    }
                }
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

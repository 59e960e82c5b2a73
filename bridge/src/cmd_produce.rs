//! `tributary produce URL STREAM`: events from stdin, one per line, as raw payloads, JSON
//! lines or CloudEvents.

use std::io::Write;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tributary::cloudevents::{Binding, CloudEvent, Mode};
use tributary::{Error, Event, Result};
use tributary_bridge::json;

use crate::Format;
use crate::progress::Progress;

/// Options of `tributary produce`.
#[derive(clap::Args)]
pub struct ProduceArgs {
    /// Backend URL, e.g. file:///var/lib/tributary.
    url: String,
    /// Stream to write to.
    stream: String,
    /// How to read each line (`cloudevents`: one event in the CloudEvents JSON format per
    /// line, written in the backend's binding).
    #[arg(long, value_enum, default_value = "raw")]
    format: Format,
    /// Key for every event (CloudEvents: the default is the `partitionkey` attribute).
    #[arg(long)]
    key: Option<String>,
    /// CloudEvents content mode written: `binary` (attributes in headers) or `structured`
    /// (the JSON event as payload); default: binary where the platform has a binding
    /// (Kafka, Event Hubs, Pub/Sub), structured elsewhere.
    #[arg(long, value_parser = parse_mode)]
    ce_mode: Option<Mode>,
    /// Events per batch sent to the backend.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch: u32,
    /// Print `partition position` for each stored event on stdout.
    #[arg(long)]
    receipts: bool,
}

fn parse_mode(raw: &str) -> std::result::Result<Mode, String> {
    raw.parse().map_err(|e: Error| e.message().to_owned())
}

/// Bytes on stdin when it is a regular file (a redirect), for the progress line's ETA.
fn stdin_size() -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
        let meta = std::fs::File::from(fd).metadata().ok()?;
        meta.is_file().then_some(meta.len())
    }
    #[cfg(not(unix))]
    None
}

/// Runs `tributary produce`.
pub async fn run(args: ProduceArgs) -> Result<()> {
    let ProduceArgs {
        url,
        stream,
        format,
        key,
        ce_mode,
        batch,
        receipts,
    } = args;
    produce(
        &url,
        &stream,
        format,
        key,
        ce_mode,
        batch as usize,
        receipts,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn produce(
    url: &str,
    stream: &str,
    format: Format,
    key: Option<String>,
    ce_mode: Option<Mode>,
    batch_size: usize,
    print_receipts: bool,
) -> Result<()> {
    let backend = tributary::connect(url).await?;
    let max_event_bytes = backend.capabilities().max_event_bytes;
    let binding = Binding::for_scheme(backend.scheme());
    let ce_mode = ce_mode.unwrap_or(binding.default_mode());
    let input_bytes = stdin_size();
    let mut read_bytes = 0u64;
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
                Ok(_) => read_bytes += line.len() as u64,
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
                Format::Cloudevents => {
                    if text.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let ce = CloudEvent::from_json(text)
                        .map_err(|e| e.context(format!("line {line_no}")))?;
                    let event = ce
                        .to_event(binding, ce_mode)
                        .map_err(|e| e.context(format!("line {line_no}")))?;
                    match key.as_deref().or(ce.partition_key()) {
                        Some(k) => event.with_key(k.to_owned()),
                        None => event,
                    }
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
        match input_bytes {
            // From a file: how far through it, so the line can say how long is left.
            Some(total) => progress.show(|p| {
                format!(
                    "produced {sent} events, read {}",
                    p.describe(read_bytes, Some(total))
                        .replacen(" ", " bytes ", 1)
                )
            }),
            None => progress.count("produced", sent, None),
        }
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

//! One writer thread per file stream: it drains every queued batch, writes them, then fsyncs
//! each touched partition once, so N concurrent senders share one fsync.

use super::*;

pub(crate) struct WriteRequest {
    pub(crate) batches: Vec<(usize, Vec<Event>)>,
    pub(crate) reply: oneshot::Sender<Result<Vec<u64>>>,
}

/// One writer thread per file stream: it drains every queued batch, writes them, then fsyncs
/// each touched partition once, so N concurrent senders share one fsync.
pub(super) fn spawn_writer(
    name: String,
    logs: Vec<Arc<dyn PartitionLog>>,
    fsync: FsyncPolicy,
) -> mpsc::Sender<WriteRequest> {
    let (tx, mut rx) = mpsc::channel::<WriteRequest>(1024);
    let thread_name = format!("tributary-writer-{name}");
    let stream_name = name.clone();
    let spawned = std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let mut group = Vec::new();
            while let Some(first) = rx.blocking_recv() {
                group.push(first);
                while group.len() < 512 {
                    match rx.try_recv() {
                        Ok(r) => group.push(r),
                        Err(_) => break,
                    }
                }
                let now = Timestamp::now().as_millis();
                let mut touched = vec![false; logs.len()];
                let mut results = Vec::with_capacity(group.len());
                for request in &mut group {
                    let batches = std::mem::take(&mut request.batches);
                    let counts: Vec<(usize, usize)> =
                        batches.iter().map(|(p, ev)| (*p, ev.len())).collect();
                    let mut bases = Vec::with_capacity(batches.len());
                    let mut outcome = Ok(());
                    // The events move into the log (its tail of recent appends keeps them).
                    for (p, events) in batches {
                        match logs[p].append_owned(events, now) {
                            Ok(base) => {
                                touched[p] = true;
                                bases.push(base);
                            }
                            Err(e) => {
                                outcome = Err(partly_stored(e, &counts, &bases, p));
                                break;
                            }
                        }
                    }
                    results.push(outcome.map(|_| bases));
                }
                if fsync == FsyncPolicy::Always {
                    for (p, _) in touched.iter().enumerate().filter(|(_, t)| **t) {
                        if let Err(e) = logs[p].sync() {
                            for r in results.iter_mut() {
                                if r.is_ok() {
                                    *r = Err(Error::unavailable(format!(
                                        "fsync of stream `{name}` partition {p} failed: {e}"
                                    )));
                                }
                            }
                        }
                    }
                }
                for (request, result) in group.drain(..).zip(results) {
                    let _ = request.reply.send(result);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(stream = %stream_name, error = %e, "cannot start the writer thread");
    }
    tx
}

/// The error of a batch whose partition `failed` could not be written after the partitions
/// before it were (a batch is written partition by partition; each partition all or nothing).
pub(super) fn partly_stored(
    e: Error,
    batches: &[(usize, usize)],
    bases: &[u64],
    failed: usize,
) -> Error {
    if bases.is_empty() {
        return e;
    }
    let total: usize = batches.iter().map(|(_, n)| n).sum();
    let stored: Vec<String> = batches
        .iter()
        .zip(bases)
        .map(|((p, n), base)| format!("partition {p} positions {base}..{}", base + *n as u64))
        .collect();
    let count: usize = batches.iter().take(bases.len()).map(|(_, n)| n).sum();
    e.context(format!(
        "batch partly stored: {count} of {total} events were stored ({}), the events for \
         partition {failed} and after were not; sending the batch again stores the first ones twice",
        stored.join(", ")
    ))
}

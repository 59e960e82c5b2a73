//! Sending to a local stream: validation, key partitioning, the append (in place for memory,
//! through the writer thread for files).

use super::*;

pub(super) struct LocalProducer {
    pub(crate) stream: Arc<StreamState>,
    pub(crate) max_event_bytes: usize,
    /// Sends hold the read side; close takes the write side, so it waits for sends in flight.
    pub(crate) closed: tokio::sync::RwLock<bool>,
    pub(crate) scheme: &'static str,
}

impl LocalProducer {
    fn validate(&self, events: &[Event]) -> Result<()> {
        for event in events {
            let size = event.encoded_len();
            if size > self.max_event_bytes {
                return Err(Error::too_large(format!(
                    "event of {size} bytes (key + payload + headers) exceeds the limit of {} bytes \
                     on stream `{}` (option max_event_bytes)",
                    self.max_event_bytes, self.stream.name
                )));
            }
            codec::check_encodable(event, &self.stream.name)?;
        }
        Ok(())
    }

    fn partition_of(&self, event: &Event) -> usize {
        let n = self.stream.partitions.len() as u32;
        match &event.key {
            Some(key) => partition_for_key(key, n) as usize,
            None => {
                (self
                    .stream
                    .round_robin
                    .fetch_add(1, AtomicOrdering::Relaxed)
                    % n as u64) as usize
            }
        }
    }
}

#[async_trait]
impl Producer for LocalProducer {
    async fn send(&self, event: Event) -> Result<Receipt> {
        let mut receipts = self.send_batch(vec![event]).await?;
        Ok(receipts.pop().expect("one receipt per event"))
    }

    async fn send_batch(&self, events: Vec<Event>) -> Result<Vec<Receipt>> {
        let closed = self.closed.read().await;
        if *closed {
            return Err(Error::closed(format!(
                "producer of stream `{}` was closed",
                self.stream.name
            ))
            .with_backend(self.scheme));
        }
        self.stream
            .check_live()
            .map_err(|e| e.with_backend(self.scheme))?;
        self.validate(&events)
            .map_err(|e| e.with_backend(self.scheme))?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Group per partition, keeping send order inside each partition; the groups ascend by
        // partition (the writer thread relies on it). A send to one partition (every single
        // send, and any batch of one key) keeps its vector as the one group: no regrouping and
        // about half the allocations of a send.
        let parts: Vec<usize> = events.iter().map(|e| self.partition_of(e)).collect();
        let (by_partition, slots) = if parts.iter().all(|p| *p == parts[0]) {
            (vec![(parts[0], events)], None)
        } else {
            let (by_partition, slots) = group(events, &parts, self.stream.partitions.len());
            (by_partition, Some(slots))
        };
        let ids: Vec<(usize, PartitionId)> = by_partition
            .iter()
            .map(|(p, _)| (*p, PartitionId::from(*p as u32)))
            .collect();
        // Per partition group: its first offset, and the positions the log made and keeps (the
        // memory log).
        let appended: Vec<(u64, Option<Vec<Position>>)> = match self.stream.writer.get() {
            Some(writer) => {
                let (reply, rx) = oneshot::channel();
                // The events move to the writer thread: no copy of keys, payloads or headers.
                writer
                    .send(WriteRequest {
                        batches: by_partition,
                        reply,
                    })
                    .await
                    .map_err(|_| {
                        Error::closed("the stream's writer stopped").with_backend(self.scheme)
                    })?;
                rx.await
                    .map_err(|_| {
                        Error::closed("the stream's writer stopped").with_backend(self.scheme)
                    })?
                    .map_err(|e| e.with_backend(self.scheme))?
                    .into_iter()
                    .map(|base| (base, None))
                    .collect()
            }
            None if self.stream.blocking_io => {
                return Err(Error::unavailable(format!(
                    "stream `{}` is open read-only in this process",
                    self.stream.name
                ))
                .with_backend(self.scheme));
            }
            None => {
                let now = Timestamp::now().as_millis();
                // The events move into the log: it keeps them, not copies.
                let mut appended = Vec::with_capacity(by_partition.len());
                for (p, events) in by_partition {
                    appended.push(self.stream.partitions[p].append_positioned(events, now)?);
                }
                appended
            }
        };
        // Only the readers of the partitions written wake up.
        for (p, _) in &ids {
            self.stream.wake(*p);
        }
        let receipt = |group: usize, index: usize| {
            let (base, kept) = &appended[group];
            Receipt {
                partition: Some(ids[group].1.clone()),
                position: Some(match kept {
                    Some(positions) => positions[index].clone(),
                    None => Position::from_offset(base + index as u64),
                }),
            }
        };
        Ok(match slots {
            None => (0..parts.len()).map(|index| receipt(0, index)).collect(),
            Some(slots) => slots
                .into_iter()
                .map(|(group, index)| receipt(group, index))
                .collect(),
        })
    }

    async fn flush(&self) -> Result<()> {
        if *self.closed.read().await {
            return Err(Error::closed(format!(
                "producer of stream `{}` was closed",
                self.stream.name
            ))
            .with_backend(self.scheme));
        }
        let logs = self.stream.partitions.clone();
        self.stream
            .io(move || logs.iter().try_for_each(|l| l.sync()))
            .await
    }

    async fn close(&self) -> Result<()> {
        let mut closed = self.closed.write().await;
        if *closed {
            return Ok(());
        }
        *closed = true;
        let logs = self.stream.partitions.clone();
        match self
            .stream
            .io(move || logs.iter().try_for_each(|l| l.sync()))
            .await
        {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The events of a send to several partitions, grouped per partition in send order, the groups
/// ascending by partition; and for each event, in send order, its group and its index there.
#[allow(clippy::type_complexity)]
fn group(
    events: Vec<Event>,
    parts: &[usize],
    partitions: usize,
) -> (Vec<(usize, Vec<Event>)>, Vec<(usize, usize)>) {
    // Each partition's vector sized once (empty ones do not allocate).
    let mut counts = vec![0usize; partitions];
    for p in parts {
        counts[*p] += 1;
    }
    let mut per_partition: Vec<Vec<Event>> =
        counts.iter().map(|n| Vec::with_capacity(*n)).collect();
    let mut slots = Vec::with_capacity(events.len());
    for (event, p) in events.into_iter().zip(parts) {
        slots.push((*p, per_partition[*p].len()));
        per_partition[*p].push(event);
    }
    // From partition number to group index: counts is reused for it.
    let mut by_partition = Vec::new();
    for (p, events) in per_partition.into_iter().enumerate() {
        if !events.is_empty() {
            counts[p] = by_partition.len();
            by_partition.push((p, events));
        }
    }
    for slot in &mut slots {
        slot.0 = counts[slot.0];
    }
    (by_partition, slots)
}

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

    /// The first event's partition, and every event's when they are not all that one: a send
    /// to one partition (every single send, any batch of one key) allocates no list.
    fn partitions_of(&self, events: &[Event]) -> (usize, Option<Vec<usize>>) {
        let first = self.partition_of(&events[0]);
        let mut parts: Option<Vec<usize>> = None;
        for (i, event) in events.iter().enumerate().skip(1) {
            let p = self.partition_of(event);
            match &mut parts {
                Some(parts) => parts.push(p),
                None if p != first => {
                    let mut all = Vec::with_capacity(events.len());
                    all.resize(i, first);
                    all.push(p);
                    parts = Some(all);
                }
                None => {}
            }
        }
        (first, parts)
    }

    /// The send of [`Producer::send`] and [`Producer::send_batch`], awaited in place by both
    /// (no boxed future of its own).
    async fn send_events(&self, events: Vec<Event>) -> Result<Vec<Receipt>> {
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
        let (first, parts) = self.partitions_of(&events);
        match self.stream.writer.get() {
            Some(writer) => self.send_to_writer(writer, events, first, parts).await,
            None if self.stream.blocking_io => Err(Error::unavailable(format!(
                "stream `{}` is open read-only in this process",
                self.stream.name
            ))
            .with_backend(self.scheme)),
            None => self.append_in_memory(events, first, parts),
        }
    }

    /// Appends to the memory logs in place, in send order, each receipt made as its event goes
    /// in and sharing the position the log made for it and keeps for reads. The keys and
    /// payloads are copied into the stream's arena once for the whole send; a send over several
    /// partitions holds each one's lock while it appends, so its events are never grouped or
    /// moved per partition and its receipts need no slots.
    fn append_in_memory(
        &self,
        mut events: Vec<Event>,
        first: usize,
        parts: Option<Vec<usize>>,
    ) -> Result<Vec<Receipt>> {
        let now = Timestamp::now().as_millis();
        let mut receipts: Vec<Receipt> = Vec::with_capacity(events.len());
        self.stream.arena.share(&mut events);
        let Some(mut parts) = parts else {
            let id = PartitionId::from(first as u32);
            // The events move into the log: it keeps them, not copies.
            let mut log = self.memory_log(first)?.lock_append();
            for event in events {
                let position = log.push(event, now);
                receipts.push(Receipt {
                    partition: Some(id.clone()),
                    position: Some(position.clone()),
                });
            }
            drop(log);
            self.stream.wake_waiting(first);
            return Ok(receipts);
        };
        let written = written_slots(&mut parts);
        let mut logs = Vec::with_capacity(written.len());
        for p in &written {
            logs.push((
                PartitionId::from(*p as u32),
                self.memory_log(*p)?.lock_append(),
            ));
        }
        for (event, slot) in events.into_iter().zip(&parts) {
            let (id, log) = &mut logs[*slot];
            let position = log.push(event, now);
            receipts.push(Receipt {
                partition: Some(id.clone()),
                position: Some(position.clone()),
            });
        }
        drop(logs);
        for p in written {
            self.stream.wake_waiting(p);
        }
        Ok(receipts)
    }

    /// Partition `p` of a memory stream.
    fn memory_log(&self, p: usize) -> Result<&MemoryLog> {
        self.stream
            .partitions
            .get(p)
            .and_then(|log| log.as_memory())
            .ok_or_else(|| {
                Error::other(format!(
                    "partition {p} of stream `{}` is not a memory log",
                    self.stream.name
                ))
                .with_backend(self.scheme)
            })
    }

    /// Hands the events to the stream's writer thread (the file log) and makes the receipts
    /// from the first offset of each partition's group.
    async fn send_to_writer(
        &self,
        writer: &mpsc::Sender<WriteRequest>,
        events: Vec<Event>,
        first: usize,
        parts: Option<Vec<usize>>,
    ) -> Result<Vec<Receipt>> {
        let n = events.len();
        let partitions = self.stream.partitions.len();
        let batches = match &parts {
            None => vec![(first, events)],
            Some(parts) => group(events, parts, partitions),
        };
        let written: Vec<usize> = batches.iter().map(|(p, _)| *p).collect();
        let (reply, rx) = oneshot::channel();
        // The events move to the writer thread: no copy of keys, payloads or headers.
        writer
            .send(WriteRequest { batches, reply })
            .await
            .map_err(|_| Error::closed("the stream's writer stopped").with_backend(self.scheme))?;
        let bases = rx
            .await
            .map_err(|_| Error::closed("the stream's writer stopped").with_backend(self.scheme))?
            .map_err(|e| e.with_backend(self.scheme))?;
        // Only the readers of the partitions written wake up.
        for p in &written {
            self.stream.wake(*p);
        }
        // Each partition's next offset, handed out in send order.
        let mut next = vec![0u64; partitions];
        for (p, base) in written.iter().zip(bases) {
            next[*p] = base;
        }
        let receipt = |p: usize, next: &mut Vec<u64>| {
            let offset = next[p];
            next[p] += 1;
            Receipt {
                partition: Some(PartitionId::from(p as u32)),
                position: Some(Position::from_offset(offset)),
            }
        };
        Ok(match parts {
            None => (0..n).map(|_| receipt(first, &mut next)).collect(),
            Some(parts) => parts.iter().map(|p| receipt(*p, &mut next)).collect(),
        })
    }
}

#[async_trait]
impl Producer for LocalProducer {
    async fn send(&self, event: Event) -> Result<Receipt> {
        let mut receipts = self.send_events(vec![event]).await?;
        Ok(receipts.pop().expect("one receipt per event"))
    }

    async fn send_batch(&self, events: Vec<Event>) -> Result<Vec<Receipt>> {
        self.send_events(events).await
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

/// The partitions a send over several writes to, ascending (the order their locks are taken
/// in), with each event's partition in `parts` replaced by its index among them. Up to 64
/// partitions a bit set finds them with no sort or search.
fn written_slots(parts: &mut [usize]) -> Vec<usize> {
    if parts.iter().all(|p| *p < 64) {
        let set = parts.iter().fold(0u64, |set, p| set | 1 << p);
        for p in parts.iter_mut() {
            *p = (set & ((1u64 << *p) - 1)).count_ones() as usize;
        }
        return (0..64).filter(|p| set & 1 << p != 0).collect();
    }
    let mut written = parts.to_vec();
    written.sort_unstable();
    written.dedup();
    for p in parts.iter_mut() {
        *p = written.binary_search(p).unwrap_or_default();
    }
    written
}

/// The events of a send to several partitions, grouped per partition in send order, the groups
/// ascending by partition (the writer thread relies on it).
fn group(events: Vec<Event>, parts: &[usize], partitions: usize) -> Vec<(usize, Vec<Event>)> {
    // Each partition's vector sized once (empty ones do not allocate).
    let mut counts = vec![0usize; partitions];
    for p in parts {
        counts[*p] += 1;
    }
    let mut per_partition: Vec<Vec<Event>> =
        counts.iter().map(|n| Vec::with_capacity(*n)).collect();
    for (event, p) in events.into_iter().zip(parts) {
        per_partition[*p].push(event);
    }
    per_partition
        .into_iter()
        .enumerate()
        .filter(|(_, events)| !events.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::written_slots;

    #[test]
    fn written_slots_name_each_event_partition_by_its_rank() {
        // Under 64 partitions (the bit set) and beyond (sorted).
        for parts in [vec![3, 0, 3, 7, 0, 63], vec![900, 2, 64, 2, 900, 5]] {
            let mut slots = parts.clone();
            let written = written_slots(&mut slots);
            let mut expected = parts.clone();
            expected.sort_unstable();
            expected.dedup();
            assert_eq!(written, expected);
            for (p, slot) in parts.iter().zip(&slots) {
                assert_eq!(written[*slot], *p);
            }
        }
    }
}

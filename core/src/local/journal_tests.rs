//! The stream journal under power loss: a copy of a writer's directory taken while it runs is
//! what the page cache held; cutting the segments back to what the last checkpoint synced (or
//! anywhere past it, mid-frame included) is what a power loss can leave. Every acknowledged
//! record must come back, with no `Corrupt`, and the offsets go on where they stopped.

use super::*;
use crate::StartPosition;
use bytes::Bytes;
use std::os::unix::fs::FileExt;

const STREAM: &str = "s";
const PARTITIONS: u32 = 4;

/// What a send was acknowledged with: partition, offset, payload.
type Acked = (u32, u64, Vec<u8>);

fn payload(round: usize, i: usize) -> Vec<u8> {
    format!(
        "round {round} event {i} {}",
        "x".repeat((round * 7 + i * 13) % 90)
    )
    .into_bytes()
}

/// Sends `rounds` batches of 20 events over every partition, two producers at once (so write
/// rounds hold several requests), running retention after each when `retention`.
async fn send(backend: &Arc<dyn Backend>, rounds: usize, retention: bool) -> Vec<Acked> {
    let mut acked = Vec::new();
    let producers = [
        backend.producer(STREAM).await.unwrap(),
        backend.producer(STREAM).await.unwrap(),
    ];
    let local = backend.as_any().downcast_ref::<LocalBackend>().unwrap();
    for round in (0..rounds).step_by(2) {
        let batch = |round: usize| -> Vec<Event> {
            (0..20)
                .map(|i| Event::new(payload(round, i)).with_key(format!("k{}", (round + i) % 37)))
                .collect()
        };
        let (a, b) = (batch(round), batch(round + 1));
        let (ra, rb) = tokio::join!(
            producers[0].send_batch(a.clone()),
            producers[1].send_batch(b.clone())
        );
        for (events, receipts) in [(a, ra.unwrap()), (b, rb.unwrap())] {
            for (event, receipt) in events.into_iter().zip(receipts) {
                let p = receipt.partition.unwrap().as_index().unwrap();
                let offset = receipt.position.unwrap().as_offset().unwrap();
                acked.push((p, offset, event.payload.to_vec()));
            }
        }
        if retention {
            let stream = local.shared.streams.lock().get(STREAM).cloned().unwrap();
            for log in &stream.partitions {
                log.enforce_retention(i64::MAX).unwrap();
            }
        }
    }
    acked
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Where the records of a segment end, and the byte position of each record's frame.
fn frames(bytes: &[u8]) -> (Vec<(u64, usize)>, usize) {
    let bytes = Bytes::copy_from_slice(bytes);
    let (mut pos, mut out) = (0, Vec::new());
    while let codec::Frame::Record(r, len) = codec::decode(&bytes.slice(pos..)) {
        out.push((r.offset, pos));
        pos += len;
    }
    (out, pos)
}

/// Loses what a power loss can lose in the copy at `root`: each partition's active segment
/// from a point at or after the journal's first record for it (what the last checkpoint had
/// synced) is cut off (`zeros`: overwritten with zeros, as in a segment written in place) or
/// truncated. Returns how many records were cut.
fn power_loss(root: &Path, seed: u64, zeros: bool) -> usize {
    let dir = root.join("streams").join(STREAM);
    let replay = Journal::recover(&dir, PARTITIONS, STREAM).unwrap();
    let mut cut_records = 0;
    for p in 0..PARTITIONS {
        let Some(first) = frames(&replay[p as usize]).0.first().map(|(o, _)| *o) else {
            continue; // nothing unsynced
        };
        let pdir = dir.join(p.to_string());
        let mut segments: Vec<PathBuf> = fs::read_dir(&pdir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        segments.sort();
        let active = segments.last().unwrap();
        let bytes = fs::read(active).unwrap();
        let (records, end) = frames(&bytes);
        let from = records
            .iter()
            .find(|(o, _)| *o == first)
            .map_or(0, |(_, pos)| *pos);
        // Anywhere from there to the end, mid-frame included; the first partition loses all.
        let at = if p == 0 {
            from
        } else {
            from + (seed
                .wrapping_mul(2654435761)
                .wrapping_add(u64::from(p) * 977) as usize)
                % (end - from + 1)
        };
        cut_records += records.iter().filter(|(_, pos)| *pos >= at).count();
        let file = fs::OpenOptions::new().write(true).open(active).unwrap();
        if zeros {
            file.write_all_at(&vec![0; end - at], at as u64).unwrap();
        } else {
            file.set_len(at as u64).unwrap();
        }
    }
    cut_records
}

/// Reads every record of the stream at `url` from the earliest and checks the acknowledged
/// ones are all there at their offsets (those retention removed aside), then that a new send
/// gets the offset after the last one.
async fn check(backend: &Arc<dyn Backend>, acked: &[Acked], retention: bool) {
    let consumer = backend
        .consumer(
            STREAM,
            ConsumerOptions::new("check").start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let mut ends = [0u64; PARTITIONS as usize];
    for (p, offset, _) in acked {
        ends[*p as usize] = ends[*p as usize].max(offset + 1);
    }
    let mut got: HashMap<(u32, u64), Vec<u8>> = HashMap::new();
    let complete = |got: &HashMap<(u32, u64), Vec<u8>>| {
        (0..PARTITIONS)
            .all(|p| ends[p as usize] == 0 || got.contains_key(&(p, ends[p as usize] - 1)))
    };
    while !complete(&got) {
        let batch = tokio::time::timeout(
            Duration::from_secs(10),
            consumer.receive_batch(500, Duration::ZERO),
        )
        .await
        .expect("every acknowledged record is delivered")
        .unwrap_or_else(|e| panic!("reading after the power loss: {e}"));
        for d in batch {
            let p = d.partition.as_ref().unwrap().as_index().unwrap();
            let offset = d.position.as_ref().unwrap().as_offset().unwrap();
            got.insert((p, offset), d.event.payload.to_vec());
            d.ack();
        }
    }
    let mut checked = 0;
    for (p, offset, payload) in acked {
        match got.get(&(*p, *offset)) {
            Some(read) => {
                assert_eq!(read, payload, "partition {p} offset {offset}");
                checked += 1;
            }
            None => assert!(retention, "partition {p} offset {offset} is lost"),
        }
    }
    assert!(checked > 0);
    consumer.close().await.unwrap();
    // The marks agree: offsets go on after the last acknowledged one, never handed out twice.
    let producer = backend.producer(STREAM).await.unwrap();
    for p in 0..PARTITIONS {
        let key = (0..)
            .map(|k| format!("after{k}"))
            .find(|k| partition_for_key(k.as_bytes(), PARTITIONS) == p)
            .unwrap();
        let receipt = producer
            .send(Event::new("after").with_key(key))
            .await
            .unwrap();
        assert_eq!(
            receipt.position.unwrap().as_offset(),
            Some(ends[p as usize]),
            "partition {p}"
        );
    }
    producer.close().await.unwrap();
}

/// Writes under `options`, takes the copy a power loss would leave, cuts it, and reopens it
/// with `reopen` options: every acknowledged record is back.
async fn survive(options: &str, rounds: usize, zeros: bool, retention: bool, reopen: &str) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/live?{options}", dir.path().display());
    let backend = crate::connect(&url).await.unwrap();
    backend
        .create_stream(STREAM, StreamSpec::with_partitions(PARTITIONS))
        .await
        .unwrap();
    let acked = send(&backend, rounds, retention).await;
    // The writer still runs: the copy is what the page cache holds, not yet checkpointed.
    let copy = dir.path().join("copy");
    copy_dir(&dir.path().join("live"), &copy);
    backend.close().await.unwrap();
    let cut = power_loss(&copy, rounds as u64, zeros);
    assert!(cut > 0, "{options}: the power loss cut records");
    let url = format!("file://{}?{reopen}", copy.display());
    let reopened = crate::connect(&url).await.unwrap();
    // The producer first: this process opens the stream as its writer.
    let producer = reopened.producer(STREAM).await.unwrap();
    check(&reopened, &acked, retention).await;
    producer.close().await.unwrap();
    reopened.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_a_power_loss_that_cuts_the_segments() {
    survive("", 40, false, false, "").await;
    survive("", 40, true, false, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_loss_in_segments_written_in_place() {
    survive("preallocate=true&segment_bytes=65536", 40, true, false, "").await;
}

/// Segments roll and retention removes the oldest while the journal holds records of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_loss_with_segment_rolls_and_retention() {
    survive(
        "segment_bytes=2048&retention_bytes=8192",
        60,
        false,
        true,
        "",
    )
    .await;
}

/// A directory written with the journal, reopened without fsync=always: restored all the
/// same, and its journal removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_loss_reopened_under_another_fsync_mode() {
    survive("", 30, false, false, "fsync=never").await;
}

/// A journal small enough to wrap many times: checkpoints sync the partitions and start a new
/// generation; the frames of older ones (left in place after the newest) and a torn frame
/// after the last good one are not replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrapped_journal_with_a_torn_last_frame() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/live?journal_bytes=65536", dir.path().display());
    let backend = crate::connect(&url).await.unwrap();
    backend
        .create_stream(STREAM, StreamSpec::with_partitions(PARTITIONS))
        .await
        .unwrap();
    let acked = send(&backend, 300, false).await;
    let copy = dir.path().join("copy");
    copy_dir(&dir.path().join("live"), &copy);
    backend.close().await.unwrap();

    let path = copy
        .join("streams")
        .join(STREAM)
        .join(journal::JOURNAL_FILE);
    let bytes = fs::read(&path).unwrap();
    let generation = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    assert!(
        generation > 5,
        "the journal wrapped: generation {generation}"
    );
    let body = &bytes[journal::HEADER_BYTES as usize..];
    let used = journal::decode_frames(body, generation, |_, _| {});
    assert!(
        body[used..].iter().any(|b| *b != 0),
        "frames of older generations lie after the newest"
    );
    // A round whose journal write tore: its frame's header is whole, its payload is not.
    let mut torn = Vec::new();
    let start = journal::start_frame(&mut torn);
    codec::encode(&mut torn, 1 << 40, 0, &Event::new("never acknowledged"));
    journal::finish_frame(&mut torn, start, generation, 0);
    torn.truncate(torn.len() - 3);
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&torn, journal::HEADER_BYTES + used as u64)
        .unwrap();

    assert!(power_loss(&copy, 7, false) > 0);
    let reopened = crate::connect(&format!("file://{}", copy.display()))
        .await
        .unwrap();
    let producer = reopened.producer(STREAM).await.unwrap();
    check(&reopened, &acked, false).await;
    producer.close().await.unwrap();
    reopened.close().await.unwrap();
}

/// The writer died in a power loss; another process had the stream open for reading and
/// becomes its writer: it restores the journal's records as it takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_promoted_after_the_writer_died_restores_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/live", dir.path().display());
    let backend = crate::connect(&url).await.unwrap();
    backend
        .create_stream(STREAM, StreamSpec::with_partitions(PARTITIONS))
        .await
        .unwrap();
    let acked = send(&backend, 40, false).await;
    let copy = dir.path().join("copy");
    copy_dir(&dir.path().join("live"), &copy);
    backend.close().await.unwrap();
    assert!(power_loss(&copy, 3, false) > 0);

    let url = format!("file://{}", copy.display());
    let reader = crate::connect(&url).await.unwrap();
    reader.describe_stream(STREAM).await.unwrap();
    let local = reader.as_any().downcast_ref::<LocalBackend>().unwrap();
    assert!(!local.is_writable(), "opened for reading");
    let producer = reader.producer(STREAM).await.unwrap();
    assert!(local.is_writable(), "promoted");
    check(&reader, &acked, false).await;
    producer.close().await.unwrap();
    reader.close().await.unwrap();
}

/// Closing the backend checkpoints the journal while the process still holds the lock: the
/// next writer has nothing to replay, and a writer under another fsync mode removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_checkpoints_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let backend = crate::connect(&url).await.unwrap();
    backend
        .create_stream(STREAM, StreamSpec::with_partitions(PARTITIONS))
        .await
        .unwrap();
    let acked = send(&backend, 10, false).await;
    let stream_dir = dir.path().join("streams").join(STREAM);
    let held = Journal::recover(&stream_dir, PARTITIONS, STREAM).unwrap();
    assert!(
        held.iter().any(|b| !b.is_empty()),
        "the rounds are journaled"
    );
    backend.close().await.unwrap();
    let held = Journal::recover(&stream_dir, PARTITIONS, STREAM).unwrap();
    assert!(held.iter().all(|b| b.is_empty()), "nothing left to replay");

    let reopened = crate::connect(&format!("{url}?fsync=never")).await.unwrap();
    let producer = reopened.producer(STREAM).await.unwrap();
    assert!(!stream_dir.join(journal::JOURNAL_FILE).exists());
    check(&reopened, &acked, false).await;
    producer.close().await.unwrap();
    reopened.close().await.unwrap();
}

/// A directory written without a journal (`fsync=never`, or a build from before it) opens under
/// `fsync=always` as it is, and gets one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_without_a_journal_opens_and_gets_one() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let backend = crate::connect(&format!("{url}?fsync=never")).await.unwrap();
    backend
        .create_stream(STREAM, StreamSpec::with_partitions(PARTITIONS))
        .await
        .unwrap();
    let acked = send(&backend, 10, false).await;
    backend.close().await.unwrap();
    let journal = dir
        .path()
        .join("streams")
        .join(STREAM)
        .join(journal::JOURNAL_FILE);
    assert!(!journal.exists());
    let reopened = crate::connect(&url).await.unwrap();
    let producer = reopened.producer(STREAM).await.unwrap();
    assert!(journal.exists());
    check(&reopened, &acked, false).await;
    producer.close().await.unwrap();
    reopened.close().await.unwrap();
}

/// Records the journal cannot give back (the segment lost more than the last checkpoint left
/// unsynced: damage, not a power loss) stay reported as lost, by name, as without a journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_before_the_journal_stays_reported() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/live?journal_bytes=65536", dir.path().display());
    let backend = crate::connect(&url).await.unwrap();
    backend
        .create_stream(STREAM, StreamSpec::with_partitions(1))
        .await
        .unwrap();
    let producer = backend.producer(STREAM).await.unwrap();
    // Enough to checkpoint at least once, so the journal starts past offset 0.
    for round in 0..60 {
        let batch: Vec<Event> = (0..20).map(|i| Event::new(payload(round, i))).collect();
        producer.send_batch(batch).await.unwrap();
    }
    let copy = dir.path().join("copy");
    copy_dir(&dir.path().join("live"), &copy);
    producer.close().await.unwrap();
    backend.close().await.unwrap();
    let stream_dir = copy.join("streams").join(STREAM);
    let replay = Journal::recover(&stream_dir, 1, STREAM).unwrap();
    let first = frames(&replay[0]).0.first().map(|(o, _)| *o).unwrap();
    assert!(first > 10, "the journal starts at offset {first}");
    // Cut the segment well before the journal's first record.
    let segment = stream_dir.join("0").join(format!("{:020}.log", 0));
    let (records, _) = frames(&fs::read(&segment).unwrap());
    let cut_at = records[5].1;
    fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(cut_at as u64)
        .unwrap();
    let reopened = crate::connect(&format!("file://{}", copy.display()))
        .await
        .unwrap();
    let producer = reopened.producer(STREAM).await.unwrap();
    let consumer = reopened
        .consumer(
            STREAM,
            ConsumerOptions::new("g").start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let mut seen = 0;
    let err = loop {
        match tokio::time::timeout(
            Duration::from_secs(10),
            consumer.receive_batch(100, Duration::ZERO),
        )
        .await
        .expect("the records before the gap, then its error")
        {
            Ok(batch) => {
                seen += batch.len();
                batch.into_iter().for_each(|d| d.ack());
            }
            Err(e) => break e,
        }
    };
    assert_eq!(seen, 5, "the records before the gap are read");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("records 5 to"), "{err}");
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
    reopened.close().await.unwrap();
}

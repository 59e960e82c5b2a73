use super::*;

#[test]
fn murmur2_matches_kafka() {
    // Vectors from Kafka's UtilsTest.testMurmur2.
    let cases: &[(&[u8], i32)] = &[
        (b"21", -973_932_308),
        (b"foobar", -790_332_482),
        (b"a-little-bit-long-string", -985_981_536),
        (b"a-little-bit-longer-string", -1_486_304_829),
        (
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        ),
        (b"abc", 479_470_107),
    ];
    for (input, expected) in cases {
        assert_eq!(
            murmur2(input) as i32,
            *expected,
            "{:?}",
            std::str::from_utf8(input)
        );
    }
}

#[test]
fn url_options_are_validated() {
    let bad = [
        ("memory://?partitions=0", "partitions"),
        ("memory://?partitions=x", "partitions"),
        ("memory://?fsync=always", "file:// only"),
        ("file:///tmp/x?fsync=sometimes", "fsync"),
        (
            "file:///tmp/x?fsync=never&fsync_interval=1s",
            "fsync_interval",
        ),
        ("file://relative/dir", "three slashes"),
        ("memory://?bogus=1", "unknown option `bogus`"),
        ("memory://?max_event_bytes=lots", "max_event_bytes"),
        ("memory:///path", "no path"),
        ("memory://?preallocate=true", "file:// only"),
        (
            "file:///tmp/x?fsync=never&preallocate=true",
            "fsync=always only",
        ),
        ("file:///tmp/x?preallocate=maybe", "preallocate"),
        ("memory://?journal_bytes=1048576", "file:// only"),
        ("file:///tmp/x?journal_bytes=4096", "journal_bytes"),
        ("file:///tmp/x?journal_bytes=8589934592", "journal_bytes"),
        (
            "file:///tmp/x?fsync=never&journal_bytes=1048576",
            "fsync=always only",
        ),
    ];
    for (url, needle) in bad {
        let err = LocalConfig::from_url(&Url::parse(url).unwrap()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{url}");
        assert!(err.to_string().contains(needle), "{url}: {err}");
    }
    let ok =
        LocalConfig::from_url(&Url::parse("file:///tmp/x?fsync_interval=50ms").unwrap()).unwrap();
    assert_eq!(ok.fsync, FsyncPolicy::Interval(Duration::from_millis(50)));
    assert!(!ok.preallocate, "off by default");
    let ok = LocalConfig::from_url(&Url::parse("file:///tmp/x?preallocate=true").unwrap()).unwrap();
    assert!(ok.preallocate);
    assert_eq!(ok.fsync, FsyncPolicy::Always);
}

/// `preallocate=true` writes a partition's active segment whole before it takes records; the
/// default grows it with its appends.
#[tokio::test]
async fn preallocate_writes_the_active_segment_whole_and_only_when_asked() {
    async fn segment_sizes(options: &str) -> Vec<u64> {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "file://{}?segment_bytes=65536{options}",
            dir.path().display()
        );
        let backend = crate::connect(&url).await.unwrap();
        backend
            .create_stream("s", StreamSpec::with_partitions(1))
            .await
            .unwrap();
        let producer = backend.producer("s").await.unwrap();
        producer.send(crate::Event::new("one")).await.unwrap();
        let mut sizes = Vec::new();
        let mut dirs = vec![dir.path().to_path_buf()];
        while let Some(d) = dirs.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "log") {
                    sizes.push(std::fs::metadata(&path).unwrap().len());
                }
            }
        }
        backend.close().await.unwrap();
        sizes
    }
    let grown = segment_sizes("").await;
    assert_eq!(grown.len(), 1, "one segment: {grown:?}");
    assert!(
        grown[0] < 1024,
        "a growing segment holds its one record: {grown:?}"
    );
    let written = segment_sizes("&preallocate=true").await;
    assert_eq!(written, vec![65536], "the active segment written whole");
}

/// Issue 17 (2): only a process that writes holds the writer lock; one that reads first
/// and produces later becomes the writer then, and its consumer sees its own events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_lock_is_taken_by_the_first_write() {
    use crate::ConsumerExt;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let first = crate::connect(&url).await.unwrap();
    first
        .create_stream("s", StreamSpec::with_partitions(2))
        .await
        .unwrap();
    let reader = crate::connect(&url).await.unwrap();
    reader.describe_stream("s").await.unwrap();
    let consumer = reader
        .consumer(
            "s",
            ConsumerOptions::new("g").start(crate::StartPosition::Earliest),
        )
        .await
        .unwrap();
    assert!(
        consumer
            .receive_timeout(Duration::from_millis(50))
            .await
            .unwrap()
            .is_none()
    );
    let local = |b: &Arc<dyn Backend>| {
        b.as_any()
            .downcast_ref::<LocalBackend>()
            .unwrap()
            .is_writable()
    };
    assert!(!local(&first) && !local(&reader), "nobody has written yet");

    // The reading process now writes: it takes the lock, its reader view becomes the log.
    let producer = reader.producer("s").await.unwrap();
    assert!(local(&reader));
    producer
        .send(Event::new("mine").with_key("k"))
        .await
        .unwrap();
    let d = consumer
        .receive_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("the process's own event");
    assert_eq!(d.event.payload.as_ref(), b"mine");
    d.ack();

    // Another process can neither write nor create meanwhile, and says who writes.
    let err = first.producer("s").await.err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.is_retryable() && err.to_string().contains("another process"),
        "{err}"
    );
    consumer.close().await.unwrap();
    producer.close().await.unwrap();
    reader.close().await.unwrap();
    // The lock is free again once the writer closed.
    first.producer("s").await.unwrap().close().await.unwrap();
    first.close().await.unwrap();
}

#[test]
fn stream_names() {
    for good in ["orders", "a.b-c_d", "x1"] {
        validate_stream_name(good).unwrap();
    }
    for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(250)] {
        assert_eq!(
            validate_stream_name(bad).unwrap_err().kind(),
            ErrorKind::Config
        );
    }
}

/// Receipts of a send to one partition and of a send spread over several (appended in send
/// order under each partition's lock) both come back in send order, each naming the partition its key maps to and
/// the next offset there; and the events read back are the ones sent, byte for byte, small ones
/// (copied into the log's arenas) and a large one (kept as sent) alike, each delivered at its
/// receipt's position. Memory and file logs both (their receipts and deliveries make each
/// position from the one before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_follow_send_order_and_events_read_back_whole() {
    receipts_and_reads("memory://").await;
    let dir = tempfile::tempdir().unwrap();
    receipts_and_reads(&format!("file://{}?fsync=never", dir.path().display())).await;
}

async fn receipts_and_reads(url: &str) {
    let backend = crate::connect(url).await.unwrap();
    backend
        .create_stream("s", StreamSpec::with_partitions(4))
        .await
        .unwrap();
    let producer = backend.producer("s").await.unwrap();
    let big = vec![9u8; 64 << 10];
    let event = |i: usize| {
        let payload = if i == 7 {
            big.clone()
        } else {
            vec![i as u8; i]
        };
        Event::new(payload)
            .with_key(format!("k{}", i % 5))
            .with_header("i", i.to_string())
    };
    let mut sent: Vec<Event> = Vec::new();
    let mut receipts = Vec::new();
    // One key: one partition. Then keys over every partition.
    let one: Vec<Event> = (0..10).map(|i| event(i * 5)).collect();
    sent.extend(one.clone());
    receipts.extend(producer.send_batch(one).await.unwrap());
    let spread: Vec<Event> = (0..40).map(event).collect();
    sent.extend(spread.clone());
    receipts.extend(producer.send_batch(spread).await.unwrap());
    let mut next = [0u64; 4];
    for (event, receipt) in sent.iter().zip(&receipts) {
        let p = partition_for_key(event.key.as_ref().unwrap(), 4);
        assert_eq!(receipt.partition, Some(PartitionId::from(p)));
        assert_eq!(
            receipt.position.as_ref().and_then(Position::as_offset),
            Some(next[p as usize]),
            "offsets of a partition follow send order"
        );
        next[p as usize] += 1;
    }
    let consumer = backend
        .consumer(
            "s",
            ConsumerOptions::new("g").start(crate::StartPosition::Earliest),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let batch = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            consumer.receive_batch(100, std::time::Duration::ZERO),
        )
        .await
        .expect("every event sent is delivered")
        .unwrap();
        for d in batch {
            got.push((d.partition.clone(), d.position.clone(), d.event.clone()));
            d.ack();
        }
    }
    for (event, receipt) in sent.iter().zip(&receipts) {
        let (.., delivered) = got
            .iter()
            .find(|(p, pos, _)| *p == receipt.partition && *pos == receipt.position)
            .expect("a delivery at each receipt's position");
        assert_eq!(delivered.key, event.key);
        assert_eq!(delivered.payload, event.payload);
        assert_eq!(delivered.headers, event.headers);
    }
    consumer.close().await.unwrap();
    backend.close().await.unwrap();
}

/// Sends spread over several partitions hold each written partition's lock while they append:
/// producers sending at once over overlapping partitions neither deadlock nor interleave a
/// key's events out of send order, and every receipt names the offset its event was stored at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_over_several_partitions_keep_each_key_in_order() {
    let backend = crate::connect("memory://").await.unwrap();
    backend
        .create_stream("s", StreamSpec::with_partitions(8))
        .await
        .unwrap();
    const PRODUCERS: usize = 4;
    const SENDS: usize = 200;
    let mut tasks = Vec::new();
    for w in 0..PRODUCERS {
        let producer: Arc<dyn crate::Producer> = backend.producer("s").await.unwrap().into();
        tasks.push(tokio::spawn(async move {
            let mut receipts = Vec::new();
            for s in 0..SENDS {
                // Keys of this producer over every partition, in an order that differs per
                // producer and send.
                let batch: Vec<Event> = (0..16)
                    .map(|i| {
                        let k = (i * 7 + s + w) % 16;
                        Event::new(format!("{w}:{s}:{i}")).with_key(format!("w{w}-k{k}"))
                    })
                    .collect();
                let sent = batch.clone();
                let got = producer.send_batch(batch).await.unwrap();
                receipts.extend(sent.into_iter().zip(got));
            }
            receipts
        }));
    }
    let mut receipts = Vec::new();
    for task in tasks {
        let done = tokio::time::timeout(std::time::Duration::from_secs(30), task)
            .await
            .expect("concurrent sends finish (no deadlock)")
            .unwrap();
        receipts.extend(done);
    }
    let consumer = backend
        .consumer(
            "s",
            ConsumerOptions::new("g").start(crate::StartPosition::Earliest),
        )
        .await
        .unwrap();
    let mut at = std::collections::HashMap::new();
    let mut order: std::collections::HashMap<Vec<u8>, Vec<bytes::Bytes>> = Default::default();
    while at.len() < receipts.len() {
        let batch = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            consumer.receive_batch(500, std::time::Duration::ZERO),
        )
        .await
        .expect("every event sent is delivered")
        .unwrap();
        for d in batch {
            let key = d.event.key.clone().unwrap().to_vec();
            order.entry(key).or_default().push(d.event.payload.clone());
            at.insert(
                (d.partition.clone(), d.position.clone()),
                d.event.payload.clone(),
            );
            d.ack();
        }
    }
    for (event, receipt) in &receipts {
        assert_eq!(
            at.get(&(receipt.partition.clone(), receipt.position.clone())),
            Some(&event.payload),
            "the receipt names where its event was stored"
        );
    }
    // Each key's events arrive in the order its producer sent them (a key is one producer's,
    // and each producer's receipts are in its send order).
    let mut sent: std::collections::HashMap<Vec<u8>, Vec<bytes::Bytes>> = Default::default();
    for (event, _) in &receipts {
        let key = event.key.clone().unwrap().to_vec();
        sent.entry(key).or_default().push(event.payload.clone());
    }
    assert_eq!(order, sent, "each key's events in send order");
    consumer.close().await.unwrap();
    backend.close().await.unwrap();
}

/// A memory append wakes a reader only when it said it waits: a consumer waiting on an idle
/// partition gets each event sent, one at a time, without the reader's idle read (1 s) having
/// to find it. A lost wake-up shows here as a receive that outlives that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_reader_is_woken_by_each_append() {
    let backend = crate::connect("memory://").await.unwrap();
    backend
        .create_stream("s", StreamSpec::with_partitions(2))
        .await
        .unwrap();
    let producer = backend.producer("s").await.unwrap();
    let consumer = backend
        .consumer(
            "s",
            ConsumerOptions::new("g").start(crate::StartPosition::Earliest),
        )
        .await
        .unwrap();
    for i in 0..200u32 {
        producer
            .send(Event::new(i.to_string()).with_key(format!("k{}", i % 3)))
            .await
            .unwrap();
        let delivery =
            tokio::time::timeout(std::time::Duration::from_millis(900), consumer.receive())
                .await
                .unwrap_or_else(|_| panic!("event {i} was not delivered before the idle read"))
                .unwrap();
        assert_eq!(delivery.event.payload, i.to_string().as_bytes());
        delivery.ack();
    }
    consumer.close().await.unwrap();
    backend.close().await.unwrap();
}

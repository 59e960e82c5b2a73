use super::*;
use crate::Timestamp;
use proptest::prelude::*;

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        retention_bytes: None,
        retention_age: None,
        preallocate: false,
    }
}

fn open(dir: &Path, segment_bytes: u64) -> FileLog {
    FileLog::open(
        dir,
        "test".into(),
        true,
        FsyncPolicy::Never,
        config(segment_bytes),
        false,
    )
    .unwrap()
}

fn event(i: usize) -> Event {
    let mut e = Event::new(vec![i as u8; i % 300]).with_key(format!("k{i}"));
    if i.is_multiple_of(3) {
        e = e.with_header("h", vec![0xffu8, i as u8]);
    }
    e
}

fn active_segment(dir: &Path) -> PathBuf {
    let mut logs: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// A write torn at any byte leaves exactly the records wholly before the tear; the log
    /// then accepts new writes at the next offset.
    #[test]
    fn recovery_after_a_torn_write_keeps_exactly_the_complete_prefix(
        batches in proptest::collection::vec(1usize..40, 1..8),
        segment_bytes in prop_oneof![Just(1024u64), Just(64 << 20)],
        cut in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let total: usize = batches.iter().sum();
        let events: Vec<Event> = (0..total).collect::<Vec<_>>().into_iter().map(event).collect();
        let last = *batches.last().unwrap();
        let marks_before_last;
        let size_before_last;
        let active_before_last;
        {
            let log = open(dir.path(), segment_bytes);
            let mut i = 0;
            for n in &batches[..batches.len() - 1] {
                log.append(&events[i..i + n], 1000 + i as i64).unwrap();
                i += n;
            }
            marks_before_last = fs::read(dir.path().join(MARKS_FILE)).unwrap();
            active_before_last = active_segment(dir.path());
            size_before_last = fs::metadata(&active_before_last).unwrap().len();
            log.append(&events[i..], 1000 + i as i64).unwrap();
        }
        // The process died inside the last write: its marks were never written, and the
        // file holds any prefix of its bytes.
        fs::write(dir.path().join(MARKS_FILE), &marks_before_last).unwrap();
        let active = active_segment(dir.path());
        let size = fs::metadata(&active).unwrap().len();
        let floor = if active == active_before_last { size_before_last } else { 0 };
        let keep = floor + cut.index((size - floor) as usize + 1) as u64;
        fs::OpenOptions::new().write(true).open(&active).unwrap().set_len(keep).unwrap();

        let log = open(dir.path(), segment_bytes);
        let (_, next) = log.bounds();
        let records = log.read(0, usize::MAX, usize::MAX).unwrap();
        prop_assert_eq!(records.len() as u64, next);
        for (i, r) in records.iter().enumerate() {
            prop_assert_eq!(r.offset, i as u64);
            prop_assert_eq!(&r.event, &events[i]);
        }
        prop_assert!(next as usize >= total - last, "records before the torn batch were lost");
        if keep == size {
            prop_assert_eq!(next as usize, total);
        }
        let base = log.append(&[Event::new("after")], 0).unwrap();
        prop_assert_eq!(base, next);
        drop(log);
        let again = open(dir.path(), segment_bytes);
        let after = again.read(base, 1, usize::MAX).unwrap();
        prop_assert_eq!(after[0].event.payload.as_ref(), b"after");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Issue 17 (7): one flipped bit anywhere in a sealed segment costs exactly the record
    /// whose frame it hit: every other record is served, the error names that record, and
    /// `skip_damaged` steps over it.
    #[test]
    fn a_flipped_bit_costs_exactly_its_record(
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let dir = tempfile::tempdir().unwrap();
        drop(fill(dir.path(), 200));
        let mut logs: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        let victim = &logs[1];
        let mut bytes = fs::read(victim).unwrap();
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        fs::write(victim, bytes).unwrap();

        let strict = open(dir.path(), 1024);
        let mut served = Vec::new();
        let err = loop {
            match strict.read(served.len() as u64, 7, usize::MAX) {
                Ok(records) => {
                    prop_assert!(!records.is_empty(), "stopped without an error");
                    served.extend(records.into_iter().map(|r| r.offset));
                }
                Err(e) => break e,
            }
        };
        let lost = served.len() as u64;
        prop_assert!(served.iter().enumerate().all(|(i, o)| *o == i as u64));
        prop_assert!(err.to_string().contains(&format!("record {lost} is lost")), "{}", err);
        let after = strict.read(lost + 1, usize::MAX, usize::MAX).unwrap();
        prop_assert_eq!(after.len() as u64, 200 - lost - 1);
        drop(strict);

        let skipping = FileLog::open(dir.path(), "t".into(), true, FsyncPolicy::Never, config(1024), true).unwrap();
        let all = skipping.read(0, usize::MAX, usize::MAX).unwrap();
        prop_assert_eq!(all.len(), 199);
        for r in &all {
            prop_assert_ne!(r.offset, lost);
            prop_assert_eq!(&r.event, &event(r.offset as usize));
        }
    }
}

fn fill(dir: &Path, n: usize) -> FileLog {
    let log = open(dir, 1024);
    for i in 0..n {
        log.append(&[event(i)], 0).unwrap();
    }
    log
}

/// Issue 17 (8): positions once handed out are never handed out again, whatever happened
/// to the data: a truncated active segment, a removed one.
#[test]
fn positions_are_never_handed_out_twice() {
    for damage in ["truncate active", "remove active", "remove all"] {
        let dir = tempfile::tempdir().unwrap();
        drop(fill(dir.path(), 120));
        let mut logs: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        match damage {
            "truncate active" => fs::OpenOptions::new()
                .write(true)
                .open(logs.last().unwrap())
                .unwrap()
                .set_len(0)
                .unwrap(),
            "remove active" => fs::remove_file(logs.last().unwrap()).unwrap(),
            _ => logs.iter().for_each(|l| fs::remove_file(l).unwrap()),
        }
        let log = open(dir.path(), 1024);
        assert_eq!(log.bounds().1, 120, "{damage}");
        assert_eq!(log.append(&[event(120)], 0).unwrap(), 120, "{damage}");
        let err = log.read(119, 1, usize::MAX).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt, "{damage}");
        assert_eq!(log.read(120, 1, usize::MAX).unwrap()[0].event, event(120));
    }
}

#[test]
fn damage_in_a_sealed_segment_is_reported_not_served() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), 1024);
        for i in 0..200 {
            log.append(&[event(i)], 0).unwrap();
        }
    }
    let mut logs: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    assert!(logs.len() > 3);
    let victim = &logs[1];
    let mut bytes = fs::read(victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(victim, bytes).unwrap();

    let log = open(dir.path(), 1024);
    let mut offset = 0;
    let err = loop {
        match log.read(offset, 7, usize::MAX) {
            Ok(records) if records.is_empty() => {
                panic!("read past the damage without an error")
            }
            Ok(records) => {
                for r in &records {
                    assert_eq!(r.event, event(r.offset as usize), "served a wrong record");
                }
                offset = records.last().unwrap().offset + 1;
            }
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
    let text = err.to_string();
    assert!(
        text.contains(&victim.file_name().unwrap().to_string_lossy().to_string()),
        "{text}"
    );
    // Later segments stay readable.
    let (_, next) = log.bounds();
    assert_eq!(
        log.read(next - 1, 1, usize::MAX).unwrap()[0].event,
        event(199)
    );
}

#[test]
fn a_garbage_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path(), 64 << 20);
        for i in 0..500 {
            log.append(&[event(i)], 0).unwrap();
        }
    }
    let index = active_segment(dir.path()).with_extension("index");
    fs::write(&index, vec![0xabu8; 24 * 7]).unwrap();
    let log = open(dir.path(), 64 << 20);
    let records = log.read(0, usize::MAX, usize::MAX).unwrap();
    assert_eq!(records.len(), 500);
    assert_eq!(log.read(437, 1, usize::MAX).unwrap()[0].event, event(437));
}

#[test]
fn an_unexpected_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), 1024));
    fs::write(dir.path().join("notes.log"), b"hello").unwrap();
    let err = FileLog::open(
        dir.path(),
        "t".into(),
        true,
        FsyncPolicy::Never,
        config(1024),
        false,
    )
    .err()
    .expect("must fail");
    assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
    assert!(err.to_string().contains("notes.log"), "{err}");
}

#[test]
fn seek_by_time_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let log = FileLog::open(
        dir.path(),
        "t".into(),
        true,
        FsyncPolicy::Always,
        LogConfig {
            segment_bytes: 2048,
            retention_bytes: Some(8192),
            retention_age: None,
            preallocate: false,
        },
        false,
    )
    .unwrap();
    for i in 0..400 {
        log.append(&[event(i)], i as i64 * 10).unwrap();
    }
    assert_eq!(log.offset_for_time(1234).unwrap(), 124);
    assert_eq!(log.offset_for_time(-5).unwrap(), 0);
    assert_eq!(log.offset_for_time(1_000_000).unwrap(), 400);
    log.enforce_retention(0).unwrap();
    let (start, next) = log.bounds();
    assert!(start > 0 && next == 400, "{start}..{next}");
    let total: u64 = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(total <= 8192 + 2048 + 400, "{total}");
    assert_eq!(log.read(0, 1, usize::MAX).unwrap()[0].offset, start);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Appended events the tail serves (keys and payloads shared in arenas) are the events
    /// sent, across arena boundaries, large events, event times and segment rolls inside a
    /// batch; the files, read after a reopen, hold the same.
    #[test]
    fn events_served_from_the_tail_and_the_files_are_the_events_sent(
        sizes in proptest::collection::vec(
            prop_oneof![8 => 0usize..400, 1 => 4000usize..9000], 1..600),
        batch in 1usize..300,
        segment_bytes in prop_oneof![Just(4096u64), Just(100_000), Just(64 << 20)],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let events: Vec<Event> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut e = Event::new(vec![(i % 251) as u8; *n]);
                if i % 4 != 0 {
                    e = e.with_key(format!("key-{i}"));
                }
                if i % 5 == 0 {
                    e = e.with_timestamp(Timestamp::from_millis(i as i64));
                }
                if i % 7 == 0 {
                    e = e.with_header("h", vec![i as u8; 3]);
                }
                e
            })
            .collect();
        let log = open(dir.path(), segment_bytes);
        for (n, chunk) in events.chunks(batch).enumerate() {
            let base = log.append_owned(chunk.to_vec(), 0).unwrap();
            prop_assert_eq!(base, (n * batch) as u64);
        }
        // The newest records, back to the oldest the tail still holds.
        let mut in_tail = 0;
        for offset in (0..events.len() as u64).rev() {
            let Some(got) = log.read_positioned(offset, 1, usize::MAX) else { break };
            prop_assert_eq!(got.len(), 1);
            prop_assert_eq!(&got[0].event, &events[offset as usize]);
            prop_assert_eq!(got[0].position.as_offset(), Some(offset));
            in_tail += 1;
        }
        prop_assert!(in_tail > 0);
        drop(log);
        let log = open(dir.path(), segment_bytes);
        let read = log.read(0, usize::MAX, usize::MAX).unwrap();
        prop_assert_eq!(read.len(), events.len());
        for r in &read {
            prop_assert_eq!(&r.event, &events[r.offset as usize]);
        }
    }
}

/// A reader asks for the bounds after every read (its lag), and must not wait for an fsync in
/// progress: the writer holds the log's lock through it, and a reader is a task on a runtime
/// worker. The fsync here is held as a slow disk would hold it.
#[test]
fn bounds_do_not_wait_for_an_fsync_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        FileLog::open(
            dir.path(),
            "test".into(),
            true,
            FsyncPolicy::Always,
            config(1 << 20),
            false,
        )
        .unwrap(),
    );
    log.append(&[event(1), event(2)], 0).unwrap();
    log.hold_sync.store(true, Ordering::Release);
    let syncing = std::thread::spawn({
        let log = log.clone();
        move || log.sync()
    });
    // The sync holds the lock (nothing else takes it here).
    let deadline = Instant::now() + Duration::from_secs(30);
    while log.inner.try_lock().is_some() {
        assert!(Instant::now() < deadline, "the sync never began");
        std::thread::yield_now();
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn({
        let log = log.clone();
        move || tx.send(log.bounds())
    });
    let bounds = rx.recv_timeout(Duration::from_secs(2));
    log.hold_sync.store(false, Ordering::Release);
    syncing.join().unwrap().unwrap();
    assert_eq!(
        bounds.expect("bounds() answered while the fsync was in progress"),
        (0, 2)
    );
}

//! Segments written in place under `fsync=always`: recovery inside their zeros, logs written
//! by growing segments, and rolls while the next segment is prepared.

use super::*;
use proptest::prelude::*;

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        retention_bytes: None,
        retention_age: None,
        preallocate: true,
    }
}

fn open(dir: &Path, segment_bytes: u64, fsync: FsyncPolicy) -> FileLog {
    FileLog::open(
        dir,
        "test".into(),
        true,
        fsync,
        config(segment_bytes),
        false,
    )
    .unwrap()
}

fn event(i: usize) -> Event {
    Event::new(vec![i as u8 | 1; 20 + i % 200]).with_key(format!("k{i}"))
}

/// Appends under `fsync=always` as the stream's writer does: append, then sync (which publishes).
fn append(log: &FileLog, events: &[Event]) -> u64 {
    let base = log.append(events, 0).unwrap();
    log.sync().unwrap();
    base
}

/// The active segment: its path, where its records end, and its file's length.
fn active(log: &FileLog) -> (PathBuf, u64, u64) {
    let g = log.inner.lock();
    let seg = g.segments.last().unwrap();
    let len = fs::metadata(&seg.log_path).unwrap().len();
    (seg.log_path.clone(), seg.size, len)
}

fn read_all(log: &FileLog) -> Vec<StoredRecord> {
    log.read(0, usize::MAX, usize::MAX).unwrap()
}

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("prepared."))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The last write into a segment written in place, torn at any byte: either its bytes
    /// from the cut on never reached the disk (zeros there), or only they did (zeros before
    /// the cut, the pages after it persisted). Recovery keeps exactly the records wholly
    /// before the first zeroed byte, takes no stale bytes for records, and later appends and
    /// reopens see exactly what was appended.
    #[test]
    fn recovery_inside_a_zero_filled_segment_keeps_exactly_the_complete_prefix(
        batches in proptest::collection::vec(1usize..30, 1..6),
        segment_bytes in prop_oneof![Just(2048u64), Just(1 << 20)],
        cut in any::<prop::sample::Index>(),
        lost_head in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let total: usize = batches.iter().sum();
        let events: Vec<Event> = (0..total).map(event).collect();
        let last = *batches.last().unwrap();
        let (marks_before_last, before, after);
        {
            let log = open(dir.path(), segment_bytes, FsyncPolicy::Always);
            let mut i = 0;
            for n in &batches[..batches.len() - 1] {
                append(&log, &events[i..i + n]);
                i += n;
            }
            marks_before_last = fs::read(dir.path().join(MARKS_FILE)).unwrap();
            before = active(&log);
            append(&log, &events[i..]);
            after = active(&log);
        }
        // The process died inside the last write: its marks were never written.
        fs::write(dir.path().join(MARKS_FILE), &marks_before_last).unwrap();
        let (path, end, len) = after;
        let floor = if path == before.0 { before.1 } else { 0 };
        // Anywhere in the write, or in the zeros after it.
        let at = floor + cut.index((len.min(end + 64) - floor) as usize + 1) as u64;
        let (zero_from, zero_to) = if lost_head { (floor, at) } else { (at, end) };
        if zero_to > zero_from {
            let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all_at(&vec![0u8; (zero_to - zero_from) as usize], zero_from).unwrap();
        }

        let log = open(dir.path(), segment_bytes, FsyncPolicy::Always);
        let (_, next) = log.bounds();
        let records = read_all(&log);
        prop_assert_eq!(records.len() as u64, next);
        for (i, r) in records.iter().enumerate() {
            prop_assert_eq!(r.offset, i as u64);
            prop_assert_eq!(&r.event, &events[i]);
        }
        prop_assert!(next as usize >= total - last, "records before the torn batch were lost");
        if zero_to <= zero_from || zero_from >= end {
            prop_assert_eq!(next as usize, total, "nothing of the write was lost");
        }
        if lost_head && at > floor {
            // The records before the zeroed ones: the batch's share of an earlier segment too,
            // when it rolled.
            let held_before: u64 = if path == before.0 {
                (total - last) as u64
            } else {
                path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
            };
            prop_assert_eq!(next, held_before, "stale bytes after zeros were taken for records");
        }
        // Appends overwrite the old write's bytes; none of them come back after a reopen.
        let base = append(&log, &[Event::new("after")]);
        prop_assert_eq!(base, next);
        drop(log);
        let again = open(dir.path(), segment_bytes, FsyncPolicy::Always);
        prop_assert_eq!(again.bounds().1, base + 1);
        let records = read_all(&again);
        prop_assert_eq!(records.len() as u64, base + 1);
        prop_assert_eq!(records[base as usize].event.payload.as_ref(), b"after");
    }
}

/// A log written by growing segments (every policy before segments were written in place;
/// `fsync=never` still) opens under `fsync=always`, is appended to in place, and reads back
/// whole under either policy.
#[test]
fn a_log_of_growing_segments_opens_and_is_appended_to_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Event> = (0..120).map(event).collect();
    {
        let log = open(dir.path(), 4096, FsyncPolicy::Never);
        for e in &events[..60] {
            log.append(std::slice::from_ref(e), 0).unwrap();
        }
        let (_, size, len) = active(&log);
        assert_eq!(size, len, "fsync=never segments grow with their records");
    }
    {
        let log = open(dir.path(), 4096, FsyncPolicy::Always);
        let (_, size, len) = active(&log);
        assert_eq!(len, 4096, "the active segment is filled with zeros at open");
        assert!(size < len);
        for e in &events[60..] {
            append(&log, std::slice::from_ref(e));
        }
        assert_eq!(read_all(&log).len(), 120);
    }
    // Sealed segments hold only their records; only the active one has zeros after them.
    let mut logs: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    for sealed in &logs[..logs.len() - 1] {
        let bytes = fs::read(sealed).unwrap();
        assert_ne!(bytes.last(), Some(&0), "{} ends in zeros", sealed.display());
    }
    for (i, fsync) in [FsyncPolicy::Never, FsyncPolicy::Always]
        .into_iter()
        .enumerate()
    {
        let log = open(dir.path(), 4096, fsync);
        let records = read_all(&log);
        assert_eq!(records.len(), 120 + i, "{fsync:?}");
        for (r, e) in records.iter().zip(&events) {
            assert_eq!(&r.event, e);
        }
        assert_eq!(append(&log, &[Event::new("x")]), 120 + i as u64);
    }
}

/// A roll while the next segment is still being prepared takes a growing segment at once, and
/// the prepared one serves the roll after; a close mid-preparation leaves no file behind.
#[test]
fn a_roll_while_the_next_segment_is_prepared_does_not_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes = 4096;
    let log = open(dir.path(), segment_bytes, FsyncPolicy::Always);
    log.hold_preparation.store(true, Ordering::Release);
    let mut n = 0;
    let mut push = |log: &FileLog| {
        append(log, &[event(n)]);
        n += 1;
    };
    let (first, _, len) = active(&log);
    assert_eq!(
        len, segment_bytes,
        "the first segment is written with zeros at open"
    );
    while active(&log).0 == first {
        push(&log);
    }
    assert!(
        log.inner.lock().preparing.is_some(),
        "held, so still preparing"
    );
    let (second, size, len) = active(&log);
    assert_eq!(size, len, "rolled to a growing segment without waiting");
    log.hold_preparation.store(false, Ordering::Release);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log
        .inner
        .lock()
        .preparing
        .as_ref()
        .unwrap()
        .thread
        .is_finished()
    {
        assert!(Instant::now() < deadline, "the preparation did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
    while active(&log).0 == second {
        push(&log);
    }
    let (_, size, len) = active(&log);
    assert_eq!(
        len, segment_bytes,
        "the prepared segment serves the next roll"
    );
    assert!(size < len);
    assert!(
        leftovers(dir.path()).is_empty(),
        "the prepared file was renamed"
    );
    // Held again, and the log closed while it waits: cancelled, its file removed.
    log.hold_preparation.store(true, Ordering::Release);
    while log.inner.lock().preparing.is_none() {
        push(&log);
    }
    drop(log);
    assert!(leftovers(dir.path()).is_empty());
    let again = open(dir.path(), segment_bytes, FsyncPolicy::Always);
    let records = read_all(&again);
    assert_eq!(records.len(), n);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.event, event(i));
    }
}

/// A prepared file a crashed writer left is removed at the next open, never taken for a segment.
#[test]
fn a_leftover_prepared_file_is_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), 4096, FsyncPolicy::Always));
    fs::write(dir.path().join("prepared.1.1"), vec![7u8; 100]).unwrap();
    let log = open(dir.path(), 4096, FsyncPolicy::Always);
    assert!(leftovers(dir.path()).is_empty());
    assert_eq!(append(&log, &[event(0)]), 0);
}

/// A log written in place, reopened without `preallocate` (the option dropped from the URL):
/// its zeros are taken for the end of its records, appends go on after them and roll as a
/// growing log does, and every record reads back.
#[test]
fn a_log_written_in_place_reopens_without_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Event> = (0..60).map(event).collect();
    {
        let log = open(dir.path(), 4096, FsyncPolicy::Always);
        append(&log, &events[..20]);
        let (_, end, len) = active(&log);
        assert!(
            len > end,
            "written in place: zeros after the records ({end} of {len})"
        );
    }
    let plain = |dir: &Path| {
        let mut config = config(4096);
        config.preallocate = false;
        FileLog::open(dir, "test".into(), true, FsyncPolicy::Always, config, false).unwrap()
    };
    {
        let log = plain(dir.path());
        assert_eq!(log.bounds().1, 20);
        append(&log, &events[20..]);
        assert!(
            leftovers(dir.path()).is_empty(),
            "nothing prepared without the option"
        );
    }
    let log = plain(dir.path());
    let records = read_all(&log);
    assert_eq!(records.len(), 60);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(r.event, events[i]);
    }
}

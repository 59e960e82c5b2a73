//! The file log as an operator meets it after damage, through the command line: lost or
//! damaged records are reported by offset and never handed out again, good records on both
//! sides stay readable, and metadata is checked against the data it describes.

mod cli_support;

use cli_support::{numbered, receipts, run, segments, url};
use std::path::Path;

/// (byte position, length, offset) of every frame in a segment file (see core's codec.rs); the
/// records of an active segment written in place (`fsync=always`) end where its zeros start.
fn frames(segment: &Path) -> Vec<(usize, usize, u64)> {
    let bytes = std::fs::read(segment).unwrap();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        let offset = u64::from_le_bytes(bytes[pos + 10..pos + 18].try_into().unwrap());
        out.push((pos, 8 + len, offset));
        pos += 8 + len;
    }
    out
}

/// Flips the last byte of the frame of `offset` in `segment` (its payload: a CRC mismatch).
fn damage_record(segment: &Path, offset: u64) {
    let (pos, len, _) = frames(segment)
        .into_iter()
        .find(|f| f.2 == offset)
        .expect("frame of the offset");
    let mut bytes = std::fs::read(segment).unwrap();
    bytes[pos + len - 1] ^= 0x5a;
    std::fs::write(segment, bytes).unwrap();
}

fn lines(out: &str) -> Vec<String> {
    out.lines().map(str::to_owned).collect()
}

fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("e{i}")).collect()
}

#[test]
fn records_beside_damage_in_a_sealed_segment_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let u = url(dir.path(), "partitions=1&segment_bytes=8192");
    let (code, _, err) = run(&["produce", &u, "s"], &numbered("e", 2000));
    assert_eq!(code, 0, "{err}");
    let partition = dir.path().join("streams/s/0");
    let sealed = &segments(&partition)[2];
    let all = frames(sealed);
    let damaged = all[all.len() / 2].2;
    let d = damaged as usize;
    damage_record(sealed, damaged);

    // Every record before the damage, then an error naming it and the way past it.
    let (code, out, err) = run(
        &["consume", &u, "s", "-n", "2000", "--idle-exit", "5s"],
        b"",
    );
    assert_ne!(code, 0, "read past damage without an error");
    assert_eq!(lines(&out), expected(0..d), "{err}");
    assert!(err.contains(&format!("record {damaged} is lost")), "{err}");
    assert!(err.contains(&format!("--from {}", damaged + 1)), "{err}");
    assert!(err.contains("skip_damaged=true"), "{err}");

    // Starting inside the segment but before the damage serves up to it.
    let from = (damaged - 10).to_string();
    let (code, out, _) = run(
        &[
            "consume",
            &u,
            "s",
            "--from",
            &from,
            "-n",
            "100",
            "--idle-exit",
            "5s",
        ],
        b"",
    );
    assert_ne!(code, 0);
    assert_eq!(lines(&out), expected(d - 10..d));

    // Starting after it serves everything after it.
    let from = (damaged + 1).to_string();
    let rest = (2000 - d - 1).to_string();
    let (code, out, err) = run(&["consume", &u, "s", "--from", &from, "-n", &rest], b"");
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines(&out), expected(d + 1..2000));

    // A group stuck at the damage goes on once told to skip it.
    let (code, out, _) = run(
        &[
            "consume",
            &u,
            "s",
            "-g",
            "G",
            "-n",
            "2000",
            "--idle-exit",
            "5s",
        ],
        b"",
    );
    assert_ne!(code, 0);
    assert_eq!(lines(&out).len(), d);
    let skipping = url(dir.path(), "skip_damaged=true");
    let (code, out, err) = run(
        &["consume", &skipping, "s", "-g", "G", "--idle-exit", "3s"],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines(&out), expected(d + 1..2000));
}

#[test]
fn a_truncated_active_segment_is_reported_and_its_positions_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let u = url(dir.path(), "partitions=1");
    let (code, out, err) = run(&["produce", &u, "s", "--receipts"], &numbered("e", 100));
    assert_eq!(code, 0, "{err}");
    assert_eq!(receipts(&out).last(), Some(&(0, 99)));
    let active = segments(&dir.path().join("streams/s/0")).pop().unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(0)
        .unwrap();

    let (code, out, err) = run(&["produce", &u, "s", "--receipts"], b"new-0\nnew-1\n");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        receipts(&out),
        vec![(0, 100), (0, 101)],
        "positions handed out again"
    );

    let (code, out, err) = run(&["consume", &u, "s", "-n", "102", "--idle-exit", "5s"], b"");
    assert_ne!(code, 0, "lost records went unreported: {out}");
    assert!(err.contains("records 0 to 99 are lost"), "{err}");
    let (code, out, err) = run(&["consume", &u, "s", "--from", "100", "-n", "2"], b"");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "new-0\nnew-1\n");
}

#[test]
fn a_damaged_last_record_is_not_taken_for_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let u = url(dir.path(), "partitions=1");
    let (code, _, err) = run(&["produce", &u, "s"], &numbered("e", 10));
    assert_eq!(code, 0, "{err}");
    let active = segments(&dir.path().join("streams/s/0")).pop().unwrap();
    damage_record(&active, 9);

    let (code, out, err) = run(&["produce", &u, "s", "--receipts"], b"after\n");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        receipts(&out),
        vec![(0, 10)],
        "the damaged record's position was reused"
    );
    let (code, out, err) = run(&["consume", &u, "s", "-n", "11", "--idle-exit", "5s"], b"");
    assert_ne!(code, 0);
    assert_eq!(lines(&out), expected(0..9));
    assert!(err.contains("record 9 is lost"), "{err}");
    let (code, out, _) = run(&["consume", &u, "s", "--from", "10", "-n", "1"], b"");
    assert_eq!((code, out.as_str()), (0, "after\n"));
}

#[test]
fn a_deleted_sealed_segment_is_an_error_naming_the_lost_records() {
    let dir = tempfile::tempdir().unwrap();
    let u = url(dir.path(), "partitions=1&segment_bytes=8192");
    let (code, _, err) = run(&["produce", &u, "s"], &numbered("e", 2000));
    assert_eq!(code, 0, "{err}");
    let all = segments(&dir.path().join("streams/s/0"));
    let first_lost = frames(&all[1])[0].2 as usize;
    let first_after = frames(&all[2])[0].2 as usize;
    std::fs::remove_file(&all[1]).unwrap();

    let (code, out, err) = run(
        &["consume", &u, "s", "-n", "2000", "--idle-exit", "5s"],
        b"",
    );
    assert_ne!(code, 0, "missing data must be an error: {err}");
    assert_eq!(lines(&out), expected(0..first_lost));
    assert!(
        err.contains(&format!(
            "records {first_lost} to {} are lost",
            first_after - 1
        )),
        "{err}"
    );
    let from = first_after.to_string();
    let (code, out, err) = run(
        &[
            "consume",
            &u,
            "s",
            "--from",
            &from,
            "-n",
            &(2000 - first_after).to_string(),
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(lines(&out), expected(first_after..2000));
}

#[test]
fn stream_metadata_is_checked_against_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let u = url(dir.path(), "");
    let (code, _, err) = run(&["streams", &u, "create", "one", "-p", "1"], b"");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["produce", &u, "one", "--key", "k"], b"a\nb\n");
    assert_eq!(code, 0, "{err}");
    let meta = dir.path().join("streams/one/stream.json");

    // A lost stream.json is rebuilt from the partitions on disk, not from defaults (4).
    std::fs::remove_file(&meta).unwrap();
    let (code, out, err) = run(
        &["produce", &u, "one", "--key", "other", "--receipts"],
        b"c\n",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(receipts(&out), vec![(0, 2)]);
    let (code, out, err) = run(&["streams", &u, "describe", "one"], b"");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 3, "one partition expected: {out}");
    let rebuilt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(rebuilt["partitions"], 1);

    // A format this build does not know, or another stream's name, is refused.
    for (body, needle) in [
        (r#"{"name":"one","partitions":1,"format":9}"#, "format 9"),
        (
            r#"{"name":"two","partitions":1,"format":1}"#,
            "names stream `two`",
        ),
    ] {
        std::fs::write(&meta, body).unwrap();
        let (code, _, err) = run(&["consume", &u, "one", "-n", "1"], b"");
        assert_ne!(code, 0, "{body} accepted");
        assert!(
            err.contains(needle) && err.contains("stream.json"),
            "{body}: {err}"
        );
    }
}

#[test]
fn interrupted_deletes_and_one_off_readers_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let u = url(dir.path(), "");
    // What a delete killed after its rename leaves: the renamed data and the group positions.
    let trash = dir.path().join(".deleted-old-4242");
    std::fs::create_dir_all(trash.join("0")).unwrap();
    std::fs::write(
        trash.join("stream.json"),
        r#"{"name":"old","partitions":1,"format":1}"#,
    )
    .unwrap();
    std::fs::write(trash.join("0/00000000000000000000.log"), vec![0u8; 4096]).unwrap();
    let positions = dir.path().join("checkpoints/G/old.json");
    std::fs::create_dir_all(positions.parent().unwrap()).unwrap();
    std::fs::write(&positions, r#"{"checkpoints":{"0":"7"}}"#).unwrap();

    let (code, _, err) = run(&["produce", &u, "s"], b"x\n");
    assert_eq!(code, 0, "{err}");
    assert!(!trash.exists(), "the interrupted delete was not finished");
    assert!(
        !positions.exists(),
        "the deleted stream's group positions survived"
    );

    for _ in 0..2 {
        let (code, out, err) = run(&["consume", &u, "s", "-n", "1"], b"");
        assert_eq!((code, out.as_str()), (0, "x\n"), "{err}");
    }
    let left: Vec<String> = std::fs::read_dir(dir.path().join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tributary-cli-"))
        .collect();
    assert!(left.is_empty(), "one-off readers left groups: {left:?}");
}

#[test]
fn a_batch_fills_segments_up_to_segment_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let u = url(dir.path(), "partitions=1&segment_bytes=8192");
    let line = "x".repeat(30);
    let input: String = (0..1000).map(|_| format!("{line}\n")).collect();
    let (code, _, err) = run(&["produce", &u, "s", "--batch", "1000"], input.as_bytes());
    assert_eq!(code, 0, "{err}");
    let files = segments(&dir.path().join("streams/s/0"));
    assert!(files.len() > 1, "{files:?}");
    for f in &files {
        let size = std::fs::metadata(f).unwrap().len();
        assert!(size <= 8192, "{} holds {size} bytes", f.display());
    }
    let (code, out, err) = run(&["consume", &u, "s", "-n", "1000"], b"");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1000);
}

//! Recovery of a damaged partition log: a log of 60 records in 1 KiB segments, then up to 8
//! edits from the input (flip a byte, truncate, remove a file) to its segments, indexes and
//! marks. Opening, reading and appending never panic, never serve a wrong record, and never
//! hand out a position twice while the marks file is intact.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tributary::local::fuzzing::{check_recovery, write_log};

/// The intact log's files (name, bytes) and its next offset, written once.
fn base() -> &'static (Vec<(String, Vec<u8>)>, u64) {
    static BASE: OnceLock<(Vec<(String, Vec<u8>)>, u64)> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let next = write_log(dir.path(), 60);
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        (files, next)
    })
}

fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}

fuzz_target!(|data: &[u8]| {
    let (files, next) = base();
    let mut files = files.clone();
    let mut marks_intact = true;
    for op in data.chunks_exact(4).take(8) {
        if files.is_empty() {
            break;
        }
        let i = op[1] as usize % files.len();
        let at = u16::from_le_bytes([op[2], op[3]]) as usize;
        if files[i].0 == "marks" {
            marks_intact = false;
        }
        let bytes = &mut files[i].1;
        match op[0] % 4 {
            0 | 1 if !bytes.is_empty() => {
                let at = at % bytes.len();
                bytes[at] ^= op[3] | 1;
            }
            2 => {
                let keep = at % (bytes.len() + 1);
                bytes.truncate(keep);
            }
            3 => {
                files.remove(i);
            }
            _ => {}
        }
    }
    let dir = tempfile::tempdir_in(scratch_root()).unwrap();
    for (name, bytes) in &files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    check_recovery(dir.path(), *next, marks_intact);
});

//! A power loss under `fsync=always` met by the journal: the input chooses how many records
//! the log holds, from which one the journal holds them, where the segment is cut, and what
//! follows the journal's frames. See `tributary::local::fuzzing::journal_replay`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0) as usize;
    let count = 1 + byte(0) % 60;
    let from = byte(1) % (count + 1);
    let cut = u64::from_le_bytes(std::array::from_fn(|i| data.get(2 + i).copied().unwrap_or(0)));
    let garbage = data.get(10..).unwrap_or_default();
    let root = if Path::new("/dev/shm").is_dir() {
        Path::new("/dev/shm").to_owned()
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::tempdir_in(root).unwrap();
    tributary::local::fuzzing::journal_replay(dir.path(), count, from, cut, garbage);
});

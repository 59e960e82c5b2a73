//! The journal's frame decoder: see `tributary::local::fuzzing::journal_frames`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tributary::local::fuzzing::journal_frames(data));

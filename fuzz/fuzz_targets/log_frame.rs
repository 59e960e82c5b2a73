//! The file log's frame decoder: see `tributary::local::fuzzing::frame` for its properties.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tributary::local::fuzzing::frame(data));

//! The file log's index decoder: see `tributary::local::fuzzing::index` for its properties.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tributary::local::fuzzing::index(data));

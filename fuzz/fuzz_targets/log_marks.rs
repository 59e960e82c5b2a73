//! The file log's marks decoder: see `tributary::local::fuzzing::marks` for its properties.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tributary::local::fuzzing::marks(data));

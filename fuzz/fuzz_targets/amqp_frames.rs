//! The Event Hubs emulator's rewriter of outgoing AMQP frames (its own source file, compiled in
//! here): never a panic on any byte stream, and the output does not depend on how the stream
//! was cut into writes.
#![no_main]

#[allow(dead_code)]
#[path = "../../testcontainers/eventhubs-emulator/src/wire_compat.rs"]
mod wire_compat;

use libfuzzer_sys::fuzz_target;
use wire_compat::Rewriter;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let mut whole = Vec::new();
    Rewriter::default().feed(stream, &mut whole);

    let mut pieces = Vec::new();
    let mut rewriter = Rewriter::default();
    let step = (cut as usize % 61) + 1;
    for chunk in stream.chunks(step) {
        rewriter.feed(chunk, &mut pieces);
    }
    assert_eq!(whole, pieces, "output depends on the write sizes ({step})");
});

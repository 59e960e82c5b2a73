//! The CLI's JSON lines: never a panic, and an accepted line survives consume's output format
//! and back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary_bridge::json::{delivery_to_json, event_from_json};

struct Noop;
impl tributary::Acknowledge for Noop {
    fn settle(self: Box<Self>, _: tributary::Outcome) {}
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(event) = event_from_json(text, 1) else {
        return;
    };
    let delivery = tributary::Delivery {
        event: event.clone(),
        partition: None,
        position: None,
        attempt: None,
        handle: tributary::AckHandle::new(Box::new(Noop)),
    };
    let line = delivery_to_json("s", &delivery);
    let again = event_from_json(&line, 1).expect("consume's output parses");
    assert_eq!(again, event);
    delivery.ack();
});

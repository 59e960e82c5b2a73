//! The declared capabilities, pinned: a forgotten flag must not silently skip conformance cases.

#[tokio::test]
async fn eventhubs_capability_snapshot() {
    tributary_eventhubs::register();
    // Nothing is contacted until a hub is named.
    let backend = tributary::connect("eventhubs://emulator.localhost?endpoint=amqp://127.0.0.1:9")
        .await
        .expect("connect");
    let expected = "Capabilities { native_headers: true, timestamps: true, ordering: PerKey, ack: Cumulative, nack: true, delivery_attempts: true, start: StartSupport { earliest: true, latest: true, timestamp: true, position: true }, receipts: ReceiptSupport { partition: false, position: false }, max_event_bytes: Some(1032192), lifecycle: Lifecycle { auto_create: false, networked: true, competing_consumers: true }, lag: true, admin: false }";
    assert_eq!(format!("{:?}", backend.capabilities()), expected);
}

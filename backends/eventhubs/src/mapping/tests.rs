//! The mapping's round trips, the mark, and reading what others (and mapping version 1) wrote.

use super::*;
use proptest::prelude::*;

/// Encodes, stamps the annotations the service adds on the way, and decodes: an event
/// tributary wrote must come back exactly, without them.
fn round_trip(event: &Event) -> Event {
    let mut message = encode(event.clone()).message;
    if let Some(key) = &event.key {
        // As the SDK's batch or a single send stamps it.
        annotate_partition_key(&mut message, partition_key(key).0);
    }
    message.add_message_annotation(SEQUENCE_NUMBER.into(), AmqpValue::Long(7));
    message.add_message_annotation(OFFSET.into(), AmqpValue::String("4096".into()));
    message.add_message_annotation(ENQUEUED_TIME.into(), AmqpValue::Long(1_700_000_000_000));
    let received = decode(&message).unwrap();
    assert_eq!(received.sequence_number, Some(7));
    assert_eq!(received.offset.as_deref(), Some("4096"));
    received.event
}

#[test]
fn plain_events_use_native_slots() {
    let event = Event::new("body")
        .with_key("customer-7")
        .with_header("trace", "abc")
        .with_header("raw", vec![0u8, 255])
        .with_timestamp(Timestamp::from_millis(1_700_000_000_123));
    let encoded = encode(event.clone());
    assert_eq!(
        partition_key(b"customer-7"),
        ("customer-7".to_string(), false)
    );
    let properties = &encoded.message.application_properties.as_ref().unwrap().0;
    let names: Vec<&str> = properties.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["tributary-ts", "trace", "raw"]);
    assert!(
        properties
            .iter()
            .any(|(k, v)| k == "raw" && *v == AmqpSimpleValue::Binary(vec![0, 255]))
    );
    assert_eq!(round_trip(&event), event);
}

#[test]
fn repeated_names_use_the_envelope_and_binary_keys_a_property() {
    let event = Event::new(vec![1u8, 2])
        .with_key(vec![0xffu8, 0])
        .with_header("a", "1")
        .with_header("a", "2");
    let encoded = encode(event.clone());
    assert_eq!(partition_key(&[0xff, 0]), ("/wA=".to_string(), true));
    let names: Vec<String> = encoded
        .message
        .application_properties
        .as_ref()
        .unwrap()
        .0
        .iter()
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(names, ["tributary-key", "tributary-envelope"]);
    assert_eq!(round_trip(&event), event);
}

#[test]
fn the_message_id_marks_the_message_and_differs_per_message() {
    let id = |event: Event| {
        encode(event)
            .message
            .properties
            .and_then(|p| p.message_id)
            .unwrap()
    };
    let (first, second) = (id(Event::new("a")), id(Event::new("a")));
    assert!(is_marked_id(&first) && is_marked_id(&second));
    assert_ne!(first, second);
    let AmqpMessageId::Uuid(uuid) = first else {
        panic!("a UUID: {first:?}")
    };
    assert_eq!(uuid.get_version_num(), 8);
    // RFC 9562's variant: the top two bits of the ninth byte are 10.
    assert_eq!(uuid.as_bytes()[8] >> 6, 0b10);
    assert_eq!(&uuid.as_bytes()[..6], b"trbtry");
    assert_eq!(uuid.as_bytes()[6] & 0x0f, MAPPING_VERSION);
    // What the SDK gives a message without an id, and other ids, are not the mark.
    assert!(!is_marked_id(&AmqpMessageId::Uuid(Uuid::new_v4())));
    assert!(!is_marked_id(&AmqpMessageId::String("trbtry".into())));
}

/// A message of mapping version 1: marked by the `tributary-v` property, with a random
/// message id from the SDK. It still reads back as the event, without the service's stamps.
#[test]
fn version_1_messages_read_as_tributary_events() {
    let event = Event::new("body")
        .with_key("customer-7")
        .with_header("trace", "abc")
        .with_timestamp(Timestamp::from_millis(1_700_000_000_123));
    let mut properties = AmqpApplicationProperties::new();
    properties.insert(MARK.to_string(), AmqpSimpleValue::String("1".into()));
    properties.insert(
        TIMESTAMP.to_string(),
        AmqpSimpleValue::Long(1_700_000_000_123),
    );
    properties.insert("trace".into(), AmqpSimpleValue::String("abc".into()));
    let mut message = AmqpMessage::builder()
        .with_body(AmqpMessageBody::Binary(vec![b"body".to_vec()]))
        .with_application_properties(properties)
        .build();
    message.set_message_id(Uuid::new_v4());
    annotate_partition_key(&mut message, "customer-7".into());
    message.add_message_annotation(SEQUENCE_NUMBER.into(), AmqpValue::Long(7));
    message.add_message_annotation(ENQUEUED_TIME.into(), AmqpValue::Long(1_700_000_000_000));
    assert_eq!(decode(&message).unwrap().event, event);
}

#[test]
fn long_keys_hash_into_a_valid_partition_key() {
    let key = "k".repeat(500);
    let (partition_key, binary) = partition_key(key.as_bytes());
    assert!(binary && partition_key.len() <= MAX_PARTITION_KEY);
    assert_eq!(partition_key, super::partition_key(key.as_bytes()).0);
    let event = Event::new("x").with_key(key.clone());
    assert_eq!(round_trip(&event), event);
}

#[test]
fn foreign_messages_read_as_plain_events_with_annotations() {
    let mut properties = AmqpApplicationProperties::new();
    properties.insert("count".into(), AmqpSimpleValue::Int(42));
    properties.insert("name".into(), AmqpSimpleValue::String("x".into()));
    let mut message = AmqpMessage::builder()
        .with_body(AmqpMessageBody::Binary(vec![
            b"hello ".to_vec(),
            b"world".to_vec(),
        ]))
        .with_application_properties(properties)
        .build();
    message.add_message_annotation(SEQUENCE_NUMBER.into(), AmqpValue::Long(7));
    message.add_message_annotation(OFFSET.into(), AmqpValue::String("4096".into()));
    message.add_message_annotation(PARTITION_KEY.into(), AmqpValue::String("pk".into()));
    message.add_message_annotation(
        ENQUEUED_TIME.into(),
        AmqpValue::TimeStamp(azure_core_amqp::AmqpTimestamp(Some(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_000),
        ))),
    );
    let received = decode(&message).unwrap();
    assert_eq!(received.sequence_number, Some(7));
    assert_eq!(received.offset.as_deref(), Some("4096"));
    let event = received.event;
    assert_eq!(event.payload.as_ref(), b"hello world");
    assert_eq!(event.key.as_deref(), Some(&b"pk"[..]));
    assert_eq!(
        event.timestamp,
        Some(Timestamp::from_millis(1_700_000_000_000))
    );
    let headers: Vec<(&str, &[u8])> = event.headers.iter().map(|(k, v)| (k, v.as_ref())).collect();
    assert_eq!(
        headers,
        [
            ("count", &b"42"[..]),
            ("name", b"x"),
            (SEQUENCE_NUMBER, b"7"),
            (OFFSET, b"4096"),
            (PARTITION_KEY, b"pk"),
            (ENQUEUED_TIME, b"1700000000000"),
        ]
    );
}

proptest! {
    #[test]
    fn any_event_round_trips(
        key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        headers in proptest::collection::vec(("[a-z\u{e9}]{1,4}", proptest::collection::vec(any::<u8>(), 0..8)), 0..6),
        timestamp in proptest::option::of(any::<i64>()),
    ) {
        let mut event = Event::new(payload);
        event.key = key.map(Bytes::from);
        for (name, value) in headers {
            event.headers.append(name, value);
        }
        event.timestamp = timestamp.map(Timestamp::from_millis);
        prop_assert_eq!(round_trip(&event), event);
    }
}

/// One decoder reads a partition's messages into shared chunks: every event keeps its own
/// bytes across chunk boundaries, a large payload keeps a buffer of its own, and events held
/// after the decoder moved on (or was dropped) still read the same.
#[test]
fn events_cut_from_shared_chunks_keep_their_bytes() {
    let mut decoder = Decoder::new(false);
    let sent: Vec<Event> = (0..2000usize)
        .map(|i| {
            let size = if i == 1000 {
                SHARED_MAX + 1
            } else {
                100 + i % 7
            };
            let mut payload = format!("{i:>12}").into_bytes();
            payload.resize(size, b'x');
            Event::new(payload)
                .with_key(format!("key-{}", i % 20))
                .with_header("n", i.to_string())
        })
        .collect();
    let received: Vec<Event> = sent
        .iter()
        .map(|event| {
            let mut message = encode(event.clone()).message;
            annotate_partition_key(&mut message, partition_key(event.key.as_ref().unwrap()).0);
            message.add_message_annotation(SEQUENCE_NUMBER.into(), AmqpValue::Long(1));
            decoder.decode(&message).unwrap().event
        })
        .collect();
    drop(decoder);
    // 2000 events of over 100 bytes span several chunks of `CHUNK` bytes.
    assert!(sent.iter().map(|e| e.payload.len()).sum::<usize>() > 3 * CHUNK);
    assert_eq!(received, sent);
}

/// Events carrying the same property names name one kept copy of each (nothing allocated per
/// name, nothing for the application's thread to free), in order, after a first event with
/// other names; a name too long to keep is still read, copied.
#[test]
fn repeated_header_names_are_shared_not_copied() {
    let mut decoder = Decoder::new(false);
    let long = "x".repeat(HeaderNames::MAX_NAME_LEN + 1);
    let decode = |decoder: &mut Decoder, event: Event| {
        let mut message = encode(event).message;
        annotate_partition_key(&mut message, "k".into());
        decoder.decode(&message).unwrap().event
    };
    let other = decode(&mut decoder, Event::new("0").with_header("other", "o"));
    let events: Vec<Event> = (0..3)
        .map(|i| {
            let event = Event::new(format!("{i}"))
                .with_key("k")
                .with_header("trace", format!("t{i}"))
                .with_header(long.clone(), "l")
                .with_timestamp(Timestamp::from_millis(i));
            let received = decode(&mut decoder, event.clone());
            assert_eq!(received, event, "read back as sent");
            received
        })
        .collect();
    assert_eq!(other.headers.iter().next().unwrap().0, "other");
    let names = |event: &Event| -> Vec<*const u8> {
        event.headers.iter().map(|(n, _)| n.as_ptr()).collect()
    };
    assert_eq!(names(&events[0])[0], names(&events[2])[0], "one copy");
    assert_ne!(
        names(&events[0])[1],
        names(&events[2])[1],
        "too long: copied"
    );
}

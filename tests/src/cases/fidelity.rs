//! Fidelity: what goes in comes out, byte for byte.

use super::support::*;
use bytes::Bytes;
use std::collections::HashMap;
use tributary::{ErrorKind, Event, Timestamp};

/// 1,000 events sent in batches arrive once each, with identical key, payload, headers and timestamp.
pub(crate) async fn round_trip(c: &mut Ctx) -> CaseOutcome {
    let (consumer, producer) = c.stream_with_reader("roundtrip", 3).await?;
    let base = Timestamp::now().as_millis() - 60_000;
    let sent: Vec<Event> = (0..1000)
        .map(|i| {
            Event::new(format!("payload-{i}"))
                .with_key(format!("key-{}", i % 13))
                .with_header("index", i.to_string())
                .with_header("kind", "round-trip")
                .with_timestamp(Timestamp::from_millis(base + i as i64))
        })
        .collect();
    for chunk in sent.chunks(100) {
        producer
            .send_batch(chunk.to_vec())
            .await
            .check("send_batch")?;
    }
    let got = receive_n(consumer.as_ref(), sent.len()).await?;
    let mut by_payload: HashMap<Bytes, Event> = sent
        .iter()
        .map(|e| (e.payload.clone(), e.clone()))
        .collect();
    for d in &got {
        let want = by_payload
            .remove(&d.event.payload)
            .ok_or_else(|| format!("duplicate or unknown event {}", show(&d.event.payload)))?;
        let mut want = want;
        if !c.caps.timestamps {
            want.timestamp = d.event.timestamp;
        }
        ensure!(
            d.event == want,
            "event differs: sent {want:?}, received {:?}",
            d.event
        );
    }
    ack_all(got);
    expect_quiet(consumer.as_ref()).await?;
    consumer.close().await.check("close")?;
    Ok(None)
}

/// Empty and non-UTF-8 payloads, non-UTF-8 keys, binary header values, unicode header names, duplicate header names (in order) and 100 headers round-trip exactly.
pub(crate) async fn binary_fidelity(c: &mut Ctx) -> CaseOutcome {
    let (consumer, producer) = c.stream_with_reader("binary", 1).await?;
    let mut many = Event::new("many headers").with_key("k");
    for i in 0..100 {
        many.headers.append(format!("h{i}"), vec![i as u8; i % 5]);
    }
    let sent = vec![
        Event::new(Bytes::new()).with_key("empty-payload"),
        Event::new(vec![0xff, 0xfe, 0x00, 0x80, 0xc3]).with_key("non-utf8-payload"),
        Event::new("non-utf8 key").with_key(vec![0xff, 0x00, 0xfe]),
        Event::new("binary header values")
            .with_key("k")
            .with_header("bin", vec![0u8, 255, 128, 10, 13])
            .with_header("empty", Bytes::new()),
        Event::new("unicode header names")
            .with_key("k")
            .with_header("ключ-名前-🔑", "v"),
        Event::new("duplicate header names")
            .with_key("k")
            .with_header("dup", "1")
            .with_header("other", "x")
            .with_header("dup", "2"),
        many,
        Event::new("no key"),
    ];
    for e in &sent {
        producer.send(e.clone()).await.check("send")?;
    }
    let got = receive_n(consumer.as_ref(), sent.len()).await?;
    for (i, d) in got.iter().enumerate() {
        let want = sent
            .iter()
            .find(|e| e.payload == d.event.payload)
            .ok_or_else(|| format!("unknown event {}", show(&d.event.payload)))?;
        ensure!(
            d.event.key == want.key,
            "event {i}: key {:?} != {:?}",
            d.event.key,
            want.key
        );
        ensure!(
            d.event.headers == want.headers,
            "event {}: headers {:?} != {:?}",
            show(&want.payload),
            d.event.headers,
            want.headers
        );
    }
    same_set(&payloads(&got), &sent)?;
    ack_all(got);
    Ok(None)
}

/// An event of exactly the declared maximum size round-trips; one byte more fails at send with a too-large error, and the producer keeps working.
pub(crate) async fn size_limit(c: &mut Ctx) -> CaseOutcome {
    let max = c.caps.max_event_bytes.expect("gated");
    let (consumer, producer) = c.stream_with_reader("size", 1).await?;
    let at_limit = Event::new(vec![b'x'; max]);
    producer
        .send(at_limit.clone())
        .await
        .check("send an event of exactly the maximum size")?;
    let over = Event::new(vec![b'y'; max + 1]);
    let err = match producer.send(over).await {
        Ok(_) => {
            return Err(format!(
                "an event of {} bytes (max {max}) was accepted",
                max + 1
            ));
        }
        Err(e) => e,
    };
    ensure!(
        err.kind() == ErrorKind::TooLarge,
        "expected a too-large error, got {err}"
    );
    producer
        .send(Event::new("after"))
        .await
        .check("send after a rejected event")?;
    let got = receive_n(consumer.as_ref(), 2).await?;
    ensure!(
        got[0].event.payload.len() == max,
        "the maximum-size event came back with {} bytes",
        got[0].event.payload.len()
    );
    ensure!(
        got[1].event.payload.as_ref() == b"after",
        "second event differs"
    );
    ack_all(got);
    Ok(Some(format!("limit {max} B; error: {err}")))
}

/// Every send returns a partition and position, and the consumer sees each event at exactly that partition and position.
pub(crate) async fn receipts(c: &mut Ctx) -> CaseOutcome {
    let (consumer, producer) = c.stream_with_reader("receipts", 2).await?;
    let mut expected = HashMap::new();
    for e in numbered("r", 20) {
        let r = producer.send(e.clone()).await.check("send")?;
        ensure!(
            r.partition.is_some() && r.position.is_some(),
            "receipt lacks partition or position: {r:?}"
        );
        expected.insert(e.payload, (r.partition, r.position));
    }
    let got = receive_n(consumer.as_ref(), 20).await?;
    for d in &got {
        let want = &expected[&d.event.payload];
        ensure!(
            (&d.partition, &d.position) == (&want.0, &want.1),
            "delivery at {:?}/{:?} but the receipt said {:?}/{:?}",
            d.partition,
            d.position,
            want.0,
            want.1
        );
    }
    ack_all(got);
    Ok(None)
}

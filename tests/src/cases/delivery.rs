//! Delivery: ack, nack, drop and close, and what each promises.

use super::support::*;
use bytes::Bytes;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use tributary::{ConsumerExt, Delivery, ErrorKind, Event, Producer, StartPosition};

/// An acked event is never delivered again to a later consumer of the same group.
pub(crate) async fn ack(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("ack", 2).await?;
    let group = c.name("g");
    let first = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    let producer = c.producer(&stream).await?;
    producer.send_batch(numbered("a", 10)).await.check("send")?;
    let got = receive_n(first.as_ref(), 10).await?;
    ack_all(got);
    first.close().await.check("close")?;
    let second = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    producer
        .send(Event::new("marker"))
        .await
        .check("send marker")?;
    let next = receive_n(second.as_ref(), 1).await?;
    ensure!(
        next[0].event.payload.as_ref() == b"marker",
        "acked event {} was delivered again",
        show(&next[0].event.payload)
    );
    ack_all(next);
    expect_quiet(second.as_ref()).await?;
    Ok(None)
}

/// Deliveries never settled are redelivered to the group after their consumer closes, and after it is dropped without closing.
pub(crate) async fn no_ack_redelivers(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("noack", 2).await?;
    let group = c.name("g");
    let producer = c.producer(&stream).await?;
    let first = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    let sent = numbered("n", 10);
    producer.send_batch(sent.clone()).await.check("send")?;
    // Closed while holding unsettled deliveries.
    let held = receive_n(first.as_ref(), 10).await?;
    first.close().await.check("close")?;
    let second = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    let again = receive_n(second.as_ref(), 10).await?;
    same_set(&payloads(&again), &sent).map_err(|e| format!("after close: {e}"))?;
    drop(held);
    // Dropped without close (a crash from the group's point of view), still holding them.
    drop(second);
    let third = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    let once_more = receive_n(third.as_ref(), 10).await?;
    same_set(&payloads(&once_more), &sent).map_err(|e| format!("after drop: {e}"))?;
    drop(again);
    ack_all(once_more);
    Ok(None)
}

/// A nacked event comes back to the same group, with a higher attempt count where attempts are declared.
pub(crate) async fn nack_redelivers(c: &mut Ctx) -> CaseOutcome {
    let (consumer, producer) = c.stream_with_reader("nack", 1).await?;
    producer.send(Event::new("nack-me")).await.check("send")?;
    let first = receive_n(consumer.as_ref(), 1).await?.remove(0);
    let attempt = first.attempt;
    first.nack();
    let second = receive_n(consumer.as_ref(), 1).await?.remove(0);
    ensure!(
        second.event.payload.as_ref() == b"nack-me",
        "got {} instead",
        show(&second.event.payload)
    );
    if c.caps.delivery_attempts {
        ensure!(
            matches!((attempt, second.attempt), (Some(a), Some(b)) if b > a),
            "delivery attempt did not increase: {attempt:?} then {:?}",
            second.attempt
        );
    }
    second.ack();
    expect_quiet(consumer.as_ref()).await?;
    Ok(None)
}

/// On a log, with 0, 2 and 3 acked and 1 not, a crash redelivers 1 first and never 0: the commit never passes an unacked event.
pub(crate) async fn out_of_order_acks(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("ooo", 1).await?;
    let group = c.name("g");
    let producer = c.producer(&stream).await?;
    let first = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    producer.send_batch(numbered("o", 4)).await.check("send")?;
    let mut got = receive_n(first.as_ref(), 4).await?;
    ensure!(
        payloads(&got)
            == ["o-0", "o-1", "o-2", "o-3"].map(|s: &'static str| Bytes::from_static(s.as_bytes())),
        "single-partition order broken: {:?}",
        payloads(&got).iter().map(show).collect::<Vec<_>>()
    );
    let d3 = got.pop().expect("4");
    let d2 = got.pop().expect("3");
    let held = got.pop().expect("2");
    let d0 = got.pop().expect("1");
    d0.ack();
    d2.ack();
    d3.ack();
    // The consumer dies with event 1 unacked.
    drop(first);
    drop(held);
    let second = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    let next = receive_n(second.as_ref(), 1).await?;
    ensure!(
        next[0].event.payload.as_ref() == b"o-1",
        "expected the unacked o-1 first, got {}",
        show(&next[0].event.payload)
    );
    let mut redelivered = vec![show(&next[0].event.payload)];
    ack_all(next);
    while let Some(d) = second.receive_timeout(QUIET).await.check("receive")? {
        ensure!(
            d.event.payload.as_ref() != b"o-0",
            "o-0 was acked and committed, yet redelivered"
        );
        redelivered.push(show(&d.event.payload));
        d.ack();
    }
    Ok(Some(format!("redelivered {redelivered:?}")))
}

/// A consumer that nacks every seventh delivery still processes all 100 events.
pub(crate) async fn continue_after_errors(c: &mut Ctx) -> CaseOutcome {
    let (consumer, producer) = c.stream_with_reader("errors", 2).await?;
    let sent = numbered("e", 100);
    producer.send_batch(sent.clone()).await.check("send")?;
    let mut done = HashSet::new();
    let mut deliveries = 0usize;
    let deadline = Instant::now() + WAIT;
    while done.len() < sent.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(d) = consumer.receive_timeout(left).await.check("receive")? else {
            return Err(format!("only {} of 100 processed", done.len()));
        };
        deliveries += 1;
        if deliveries.is_multiple_of(7) {
            d.nack();
        } else {
            done.insert(d.event.payload.clone());
            d.ack();
        }
    }
    Ok(Some(format!("{deliveries} deliveries for 100 events")))
}

/// Every send confirmed to eight concurrent senders, before and during close, is stored; close stops later sends.
pub(crate) async fn producer_close_flushes(c: &mut Ctx) -> CaseOutcome {
    let (consumer, producer) = c.stream_with_reader("closeflush", 2).await?;
    let producer: Arc<dyn Producer> = Arc::from(producer);
    let (progress, mut progress_rx) = tokio::sync::watch::channel(0usize);
    let progress = Arc::new(progress);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let p = producer.clone();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let mut stored = Vec::new();
            for i in 0..100_000 {
                let payload = Bytes::from(format!("t{t}-{i}"));
                match p
                    .send(Event::new(payload.clone()).with_key(format!("t{t}")))
                    .await
                {
                    Ok(_) => {
                        stored.push(payload);
                        progress.send_modify(|n| *n += 1);
                    }
                    Err(e) if e.kind() == ErrorKind::Closed => break,
                    Err(e) => return Err(format!("send failed: {e}")),
                }
            }
            Ok(stored)
        }));
    }
    // Close while the eight senders are mid-stream.
    progress_rx
        .wait_for(|n| *n >= 200)
        .await
        .map_err(|_| "senders stopped early".to_string())?;
    producer.close().await.check("close")?;
    let mut stored = Vec::new();
    for t in tasks {
        stored.extend(t.await.map_err(|e| e.to_string())??);
    }
    ensure!(stored.len() < 800_000, "close did not stop the senders");
    let got = receive_n(consumer.as_ref(), stored.len()).await?;
    let mut got_payloads = payloads(&got);
    got_payloads.sort();
    stored.sort();
    ensure!(
        got_payloads == stored,
        "stored {} events but {} were confirmed",
        got_payloads.len(),
        stored.len()
    );
    ack_all(got);
    expect_quiet(consumer.as_ref()).await?;
    Ok(Some(format!(
        "{} sends confirmed, then close",
        stored.len()
    )))
}

/// Send or receive after close fails with a closed error; closing twice is harmless.
pub(crate) async fn use_after_close(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("afterclose", 1).await?;
    let producer = c.producer(&stream).await?;
    producer.close().await.check("close producer")?;
    producer
        .send(Event::new("late"))
        .await
        .must_fail(ErrorKind::Closed, "send after close")?;
    producer.close().await.check("second close of producer")?;
    let consumer = c
        .consumer(&stream, &c.name("g"), StartPosition::Earliest)
        .await?;
    consumer.close().await.check("close consumer")?;
    consumer
        .receive()
        .await
        .must_fail(ErrorKind::Closed, "receive after close")?;
    consumer.close().await.check("second close of consumer")?;
    Ok(None)
}

/// Of e0, e1, e2 under one key, with e0 and e1 nacked and e2 acked, e0 and e1 come back in that order before e3.
pub(crate) async fn nack_order(c: &mut Ctx) -> CaseOutcome {
    let (consumer, producer) = c.stream_with_reader("nackorder", 3).await?;
    // More events than the three in hand, so a backend that prefetches has later events of the
    // key buffered when the nacks arrive: they must not overtake the nacked ones.
    let total = 20;
    let sent: Vec<Event> = (0..total)
        .map(|i| Event::new(format!("e{i}")).with_key("one-key"))
        .collect();
    producer.send_batch(sent).await.check("send_batch")?;
    let mut first = receive_n(consumer.as_ref(), 3).await?;
    let labels: Vec<String> = first.iter().map(|d| show(&d.event.payload)).collect();
    ensure!(
        labels == ["e0", "e1", "e2"],
        "one key's first deliveries were {labels:?}, not e0, e1, e2"
    );
    let e2 = first.pop().expect("3");
    let e1 = first.pop().expect("2");
    let e0 = first.pop().expect("1");
    let first_attempts = [e0.attempt, e1.attempt];
    e0.nack();
    e1.nack();
    e2.ack();

    let mut after = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !after
        .iter()
        .any(|d: &Delivery| d.event.payload.as_ref() == b"e19")
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match consumer.receive_timeout(left).await.check("receive")? {
            Some(d) => after.push(d),
            None => {
                return Err(format!(
                    "after the nacks, only {} deliveries arrived: {}",
                    after.len(),
                    sequence(&after)
                ));
            }
        }
    }
    let got: Vec<String> = after.iter().map(|d| show(&d.event.payload)).collect();
    ensure!(
        got.len() >= 2 && got[..2] == ["e0", "e1"],
        "after nacking e0 and e1 and acking e2, deliveries went {} (expected e0#2 e1#2 before e3)",
        sequence(&after)
    );
    if c.caps.delivery_attempts {
        for (i, d) in after[..2].iter().enumerate() {
            ensure!(
                matches!((first_attempts[i], d.attempt), (Some(a), Some(b)) if b > a),
                "e{i}: attempt {:?} after {:?}",
                d.attempt,
                first_attempts[i]
            );
        }
    }
    // At-least-once allows e2 again straight after the nacked events (Pub/Sub's ordered
    // redelivery resends a key's later messages); anything else is e3.. in order.
    let rest_from = if got.get(2).map(String::as_str) == Some("e2") {
        3
    } else {
        2
    };
    let want: Vec<String> = (3..total).map(|i| format!("e{i}")).collect();
    ensure!(
        got[rest_from..] == want[..],
        "after e0#2 and e1#2 the key went {} (expected e3 … e19 in order)",
        sequence(&after[rest_from..])
    );
    ack_all(after);
    expect_quiet(consumer.as_ref()).await?;
    consumer.close().await.check("close")?;
    Ok(None)
}

/// `e3#1 e4#1 …`: payloads with their attempts, the first dozen.
fn sequence(ds: &[Delivery]) -> String {
    let mut shown: Vec<String> = ds
        .iter()
        .take(12)
        .map(|d| match d.attempt {
            Some(a) => format!("{}#{a}", show(&d.event.payload)),
            None => show(&d.event.payload),
        })
        .collect();
    if ds.len() > 12 {
        shown.push(format!("… ({} in all)", ds.len()));
    }
    shown.join(" ")
}

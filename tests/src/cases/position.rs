//! Position: where a new group starts, where a returning one resumes, and how far behind it is.

use super::support::*;
use std::time::Duration;
use tributary::{AckModel, Event, StartPosition, Timestamp};

/// A new group starting at earliest sees the events already stored; one starting at latest sees only those sent after it opened.
pub(crate) async fn start_earliest_latest(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("start", 2).await?;
    let producer = c.producer(&stream).await?;
    let old = numbered("old", 5);
    producer.send_batch(old.clone()).await.check("send")?;
    let earliest = c
        .consumer(&stream, &c.name("early"), StartPosition::Earliest)
        .await?;
    let latest = c
        .consumer(&stream, &c.name("late"), StartPosition::Latest)
        .await?;
    let new = numbered("new", 5);
    producer.send_batch(new.clone()).await.check("send")?;
    let e = receive_n(earliest.as_ref(), 10).await?;
    let all: Vec<Event> = old.iter().chain(new.iter()).cloned().collect();
    same_set(&payloads(&e), &all).map_err(|e| format!("earliest: {e}"))?;
    let l = receive_n(latest.as_ref(), 5).await?;
    same_set(&payloads(&l), &new).map_err(|e| format!("latest: {e}"))?;
    expect_quiet(latest.as_ref()).await?;
    ack_all(e);
    ack_all(l);
    Ok(None)
}

/// A new group starting at time t sees exactly the events stored at or after t.
pub(crate) async fn start_at_timestamp(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("time", 2).await?;
    let producer = c.producer(&stream).await?;
    let old = numbered("before", 5);
    producer.send_batch(old).await.check("send")?;
    // Separate the two batches in time by a clock step, not as synchronisation.
    let cut = Timestamp::now().as_millis() + 20;
    while Timestamp::now().as_millis() <= cut {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let new = numbered("after", 5);
    producer.send_batch(new.clone()).await.check("send")?;
    let consumer = c
        .consumer(
            &stream,
            &c.name("g"),
            StartPosition::Timestamp(Timestamp::from_millis(cut)),
        )
        .await?;
    let got = receive_n(consumer.as_ref(), 5).await?;
    same_set(&payloads(&got), &new)?;
    expect_quiet(consumer.as_ref()).await?;
    ack_all(got);
    Ok(None)
}

/// A group reopened after a close continues after its committed progress, even when told to start at latest.
pub(crate) async fn resume_after_restart_of_consumer(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("resume", 1).await?;
    let group = c.name("g");
    let producer = c.producer(&stream).await?;
    let first = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    let sent = numbered("res", 10);
    producer.send_batch(sent.clone()).await.check("send")?;
    let got = receive_n(first.as_ref(), 5).await?;
    // Any five may come first: only per-key order is promised, so a log may store one batch's
    // keys in another order than they were sent (Event Hubs sends one batch per key). The
    // group must then continue with the other five.
    let received = payloads(&got);
    let (done, remaining): (Vec<Event>, Vec<Event>) = sent
        .iter()
        .cloned()
        .partition(|e| received.contains(&e.payload));
    if c.caps.ack == AckModel::Cumulative {
        // A log delivers each key in order, so what was read of a key is its first events.
        for key in sent.iter().filter_map(|e| e.key.as_ref()) {
            let of_key: Vec<&Event> = sent
                .iter()
                .filter(|e| e.key.as_ref() == Some(key))
                .collect();
            let read = of_key
                .iter()
                .take_while(|e| received.contains(&e.payload))
                .count();
            let read_anywhere = of_key
                .iter()
                .filter(|e| received.contains(&e.payload))
                .count();
            ensure!(
                read == read_anywhere,
                "events of one key were read out of order: key {key:?}, {read_anywhere} read but only the first {read} in sequence"
            );
        }
    }
    ensure!(
        done.len() == 5,
        "the first consumer got unknown or repeated events"
    );
    ack_all(got);
    first.close().await.check("close")?;
    // Latest would skip the rest; the committed position must win.
    let second = c.consumer(&stream, &group, StartPosition::Latest).await?;
    let rest = receive_n(second.as_ref(), 5).await?;
    same_set(&payloads(&rest), &remaining)?;
    ack_all(rest);
    expect_quiet(second.as_ref()).await?;
    Ok(None)
}

/// Consumer lag counts the events the group has not acked, and follows new events and acks.
pub(crate) async fn lag(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("lag", 1).await?;
    let group = c.name("g");
    let producer = c.producer(&stream).await?;
    let consumer = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    producer
        .send_batch(numbered("lag", 10))
        .await
        .check("send")?;
    let got = receive_n(consumer.as_ref(), 4).await?;
    ack_all(got);
    consumer.commit().await.check("commit")?;
    // Backends refresh the figure periodically (Kafka: librdkafka statistics, every second).
    let wait_for = async |want: u64| -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let lag = consumer.lag();
            if lag == Some(want) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("lag is {lag:?}, expected Some({want})"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    wait_for(6).await?;
    producer
        .send_batch(numbered("lag-more", 5))
        .await
        .check("send")?;
    wait_for(11).await?;
    let rest = receive_n(consumer.as_ref(), 11).await?;
    ack_all(rest);
    consumer.commit().await.check("commit")?;
    wait_for(0).await?;
    Ok(None)
}

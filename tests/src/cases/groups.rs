//! Ordering and groups: per-key order, sharing work, fan-out, rebalancing, isolation.

use super::support::*;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tributary::{Consumer, ConsumerExt, Delivery, Event, Producer, StartPosition};

/// Events of 20 keys sent by four concurrent senders arrive, key by key, in send order.
pub(crate) async fn per_key_order(c: &mut Ctx) -> CaseOutcome {
    let (consumer, producer) = c.stream_with_reader("order", 4).await?;
    let producer: Arc<dyn Producer> = Arc::from(producer);
    let keys = 20;
    let per_key = 50;
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let p = producer.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_key {
                for k in (worker..keys).step_by(4) {
                    p.send(Event::new(format!("{k}:{i}")).with_key(format!("key-{k}")))
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    // Process concurrently: handlers run in parallel, but each key's events must still be seen
    // in order at receive time, which is what a keyed handler pool relies on.
    let got = receive_n(consumer.as_ref(), keys * per_key).await?;
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    let mut handlers = Vec::new();
    for d in got {
        let text = String::from_utf8_lossy(&d.event.payload).into_owned();
        let (k, i) = text.split_once(':').ok_or("bad payload")?;
        let i: i64 = i.parse().map_err(|_| "bad payload")?;
        let prev = last.insert(k.to_owned(), i).unwrap_or(-1);
        ensure!(i == prev + 1, "key {k}: event {i} arrived after {prev}");
        handlers.push(tokio::spawn(async move { d.ack() }));
    }
    for h in handlers {
        h.await.map_err(|e| e.to_string())?;
    }
    Ok(None)
}

/// Two consumers of one group together receive all 400 events, each some, none twice.
pub(crate) async fn competing_consumers(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("compete", 4).await?;
    let group = c.name("g");
    let a: Arc<dyn Consumer> =
        Arc::from(c.consumer(&stream, &group, StartPosition::Earliest).await?);
    let b: Arc<dyn Consumer> =
        Arc::from(c.consumer(&stream, &group, StartPosition::Earliest).await?);
    let producer = c.producer(&stream).await?;
    let sent: Vec<Event> = (0..400)
        .map(|i| Event::new(format!("c-{i}")).with_key(format!("k{i}")))
        .collect();
    producer.send_batch(sent.clone()).await.check("send")?;
    let seen = Arc::new(Seen::default());
    let run = |consumer: Arc<dyn Consumer>, seen: Arc<Seen>| async move {
        let deadline = Instant::now() + WAIT;
        let mut mine = 0usize;
        while seen.total() < 400 && Instant::now() < deadline {
            if let Some(d) = consumer
                .receive_timeout(Duration::from_millis(200))
                .await
                .map_err(|e| e.to_string())?
            {
                seen.add(d.event.payload.clone());
                mine += 1;
                d.ack();
            }
        }
        Ok::<_, String>(mine)
    };
    let (ra, rb) = tokio::join!(run(a.clone(), seen.clone()), run(b.clone(), seen.clone()));
    let (na, nb) = (ra?, rb?);
    let (distinct, duplicates) = seen.counts();
    ensure!(
        distinct == 400,
        "together they received {distinct} of 400 distinct events"
    );
    ensure!(
        duplicates == 0,
        "{duplicates} events were delivered twice in steady state"
    );
    ensure!(na > 0 && nb > 0, "work was not shared: {na} and {nb}");
    Ok(Some(format!("split {na}/{nb}")))
}

/// Two groups each receive every event.
pub(crate) async fn fan_out(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("fanout", 2).await?;
    let one = c
        .consumer(&stream, &c.name("g1"), StartPosition::Earliest)
        .await?;
    let two = c
        .consumer(&stream, &c.name("g2"), StartPosition::Earliest)
        .await?;
    let producer = c.producer(&stream).await?;
    let sent = numbered("f", 50);
    producer.send_batch(sent.clone()).await.check("send")?;
    let g1 = receive_n(one.as_ref(), 50).await?;
    let g2 = receive_n(two.as_ref(), 50).await?;
    same_set(&payloads(&g1), &sent).map_err(|e| format!("group 1: {e}"))?;
    same_set(&payloads(&g2), &sent).map_err(|e| format!("group 2: {e}"))?;
    ack_all(g1);
    ack_all(g2);
    Ok(None)
}

/// A consumer joining mid-stream and another leaving lose nothing, and no acked event is delivered again.
pub(crate) async fn rebalance(c: &mut Ctx) -> CaseOutcome {
    let stream = c.stream("rebalance", 4).await?;
    let group = c.name("g");
    let producer = c.producer(&stream).await?;
    let a = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    let sent: Vec<Event> = (0..300)
        .map(|i| Event::new(format!("rb-{i}")).with_key(format!("k{i}")))
        .collect();
    producer
        .send_batch(sent[..100].to_vec())
        .await
        .check("send")?;
    let mut acked: HashMap<Bytes, usize> = HashMap::new();
    fn record(acked: &mut HashMap<Bytes, usize>, ds: Vec<Delivery>) {
        for d in ds {
            *acked.entry(d.event.payload.clone()).or_default() += 1;
            d.ack();
        }
    }
    record(&mut acked, receive_n(a.as_ref(), 50).await?);
    // B joins mid-stream.
    let b = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    producer
        .send_batch(sent[100..200].to_vec())
        .await
        .check("send")?;
    let deadline = Instant::now() + WAIT;
    while acked.len() < 150 && Instant::now() < deadline {
        for consumer in [&a, &b] {
            if let Some(d) = consumer
                .receive_timeout(Duration::from_millis(50))
                .await
                .check("receive")?
            {
                record(&mut acked, vec![d]);
            }
        }
    }
    // A leaves mid-stream.
    a.close().await.check("close a")?;
    producer
        .send_batch(sent[200..].to_vec())
        .await
        .check("send")?;
    while acked.len() < 300 && Instant::now() < deadline {
        if let Some(d) = b
            .receive_timeout(Duration::from_millis(200))
            .await
            .check("receive")?
        {
            record(&mut acked, vec![d]);
        }
    }
    ensure!(acked.len() == 300, "{} of 300 events received", acked.len());
    let dups: Vec<_> = acked
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(p, _)| show(p))
        .collect();
    ensure!(dups.is_empty(), "acked events delivered again: {dups:?}");
    Ok(None)
}

/// Events sent to one stream reach only that stream's consumers.
pub(crate) async fn stream_isolation(c: &mut Ctx) -> CaseOutcome {
    let s1 = c.stream("iso1", 1).await?;
    let s2 = c.stream("iso2", 1).await?;
    let c1 = c
        .consumer(&s1, &c.name("g"), StartPosition::Earliest)
        .await?;
    let c2 = c
        .consumer(&s2, &c.name("g"), StartPosition::Earliest)
        .await?;
    let p1 = c.producer(&s1).await?;
    let p2 = c.producer(&s2).await?;
    let (e1, e2) = (numbered("one", 20), numbered("two", 20));
    let (r1, r2) = tokio::join!(p1.send_batch(e1.clone()), p2.send_batch(e2.clone()));
    r1.check("send 1")?;
    r2.check("send 2")?;
    let g1 = receive_n(c1.as_ref(), 20).await?;
    let g2 = receive_n(c2.as_ref(), 20).await?;
    same_set(&payloads(&g1), &e1)?;
    same_set(&payloads(&g2), &e2)?;
    ack_all(g1);
    ack_all(g2);
    expect_quiet(c1.as_ref()).await?;
    Ok(None)
}

/// Consumers of four groups on one backend commit at the same moment, ten times over; every commit succeeds, each round's within 10 s (a commit that waits for a later one's answer fails it), and a group reopened after its last commit receives nothing again.
pub(crate) async fn concurrent_commits(c: &mut Ctx) -> CaseOutcome {
    // One backend's consumers share its connections (Pulsar's client had room for one waiting
    // commit per connection: a second failed the first and broke the shared connection).
    const GROUPS: usize = 4;
    const ROUNDS: usize = 10;
    const PER_ROUND: usize = 5;
    // A commit answered at all is not enough: with the first version of Pulsar's fix, one
    // early pong left every commit waiting 30 s for the next ping's pong, and each succeeded.
    // A healthy round takes milliseconds to a second on a loaded 2-core machine.
    const COMMITS_WAIT: Duration = Duration::from_secs(10);
    let stream = c.stream("commits", 1).await?;
    let groups: Vec<String> = (0..GROUPS).map(|i| c.name(&format!("g{i}"))).collect();
    let mut consumers = Vec::with_capacity(GROUPS);
    for group in &groups {
        consumers.push(c.consumer(&stream, group, StartPosition::Earliest).await?);
    }
    let producer = c.producer(&stream).await?;
    let mut slowest = Duration::ZERO;
    for round in 0..ROUNDS {
        let sent = numbered(&format!("cc{round}"), PER_ROUND);
        producer.send_batch(sent.clone()).await.check("send")?;
        for (i, consumer) in consumers.iter().enumerate() {
            let got = receive_n(consumer.as_ref(), PER_ROUND).await?;
            same_set(&payloads(&got), &sent)
                .map_err(|e| format!("round {round}, group {i}: {e}"))?;
            ack_all(got);
        }
        let started = tokio::time::Instant::now();
        let commits = tokio::time::timeout(
            COMMITS_WAIT,
            futures::future::join_all(consumers.iter().map(|consumer| consumer.commit())),
        )
        .await
        .map_err(|_| {
            format!(
                "round {round}: the {GROUPS} groups' commits, made together, were not all \
                 answered within {COMMITS_WAIT:?}"
            )
        })?;
        slowest = slowest.max(started.elapsed());
        for (i, commit) in commits.into_iter().enumerate() {
            commit.map_err(|e| {
                format!("round {round}: group {i}'s commit, made with the other groups': {e}")
            })?;
        }
    }
    for consumer in consumers {
        consumer.close().await.check("close")?;
    }
    let again = c
        .consumer(&stream, &groups[0], StartPosition::Earliest)
        .await?;
    expect_quiet(again.as_ref()).await?;
    Ok(Some(format!(
        "slowest round's commits {} ms",
        slowest.as_millis()
    )))
}

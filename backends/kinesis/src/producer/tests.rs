use super::driver::*;
use super::*;

fn settings(aggregate: bool) -> ProducerSettings {
    ProducerSettings {
        max_record_bytes: 1 << 20,
        aggregate,
        aggregate_max_bytes: 1_000,
        linger: Duration::from_millis(5),
        max_requests_in_flight: 8,
        send_timeout: Duration::from_secs(60),
        call_timeout: Duration::from_secs(5),
    }
}

fn driver(aggregate: bool) -> Driver {
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .build();
    let (_, receiver) = mpsc::channel(1);
    Driver::new(
        Client::from_conf(config),
        "s",
        settings(aggregate),
        receiver,
        Shared::new(),
    )
}

fn submit(driver: &mut Driver, records: &[(&str, usize)]) {
    let (reply, _) = oneshot::channel();
    driver.accept(Submit {
        records: records
            .iter()
            .map(|(key, size)| Prepared {
                partition_key: PartitionKey::from(*key),
                data: Bytes::from(vec![b'x'; *size]),
                retry: None,
            })
            .collect(),
        reply,
    });
}

fn keys(units: &[Unit]) -> Vec<(String, usize)> {
    units
        .iter()
        .map(|u| (u.partition_key.to_string(), u.seqs().count()))
        .collect()
}

#[test]
fn a_call_carries_one_record_per_key_and_the_next_waits_for_it() {
    let mut d = driver(false);
    submit(&mut d, &[("a", 1), ("a", 1), ("b", 1), ("a", 1), ("c", 1)]);
    let now = Instant::now();
    let first = d.next_call(now).unwrap();
    assert_eq!(
        keys(&first),
        [("a".into(), 1), ("b".into(), 1), ("c".into(), 1)]
    );
    // a, b and c are in flight: the second a waits.
    assert!(d.next_call(now).is_none());
    let error = Error::unavailable("throttled");
    // The first a is refused: it goes back in its place and backs off; the later a's wait.
    let mut units = first.into_iter();
    let a = units.next().unwrap();
    d.retry_or_fail(a, &error, true, MAX_RECORD_BACKOFF, now);
    for unit in units {
        d.stored(unit, "shardId-000000000000", "1");
    }
    assert!(
        d.next_call(now).is_none(),
        "nothing of a may pass the backing-off a"
    );
    let later = now + MAX_BACKOFF;
    let retry = d.next_call(later).unwrap();
    assert_eq!(keys(&retry), [("a".into(), 1)]);
    assert_eq!(
        d.queue.get(retry[0].first).unwrap().index,
        0,
        "the refused record goes first"
    );
}

#[test]
fn calls_stay_within_500_records_and_5_mib() {
    let mut d = driver(false);
    let many: Vec<(String, usize)> = (0..600).map(|i| (format!("k{i}"), 10)).collect();
    let refs: Vec<(&str, usize)> = many.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    submit(&mut d, &refs);
    assert_eq!(d.next_call(Instant::now()).unwrap().len(), 500);
    let mut d = driver(false);
    let big: Vec<(String, usize)> = (0..8).map(|i| (format!("k{i}"), 1 << 20)).collect();
    let refs: Vec<(&str, usize)> = big.iter().map(|(k, n)| (k.as_str(), *n - 2)).collect();
    submit(&mut d, &refs);
    assert_eq!(d.next_call(Instant::now()).unwrap().len(), 5);
}

#[test]
fn aggregation_packs_one_keys_records_in_order_up_to_the_limit() {
    let mut d = driver(true);
    let records: Vec<(&str, usize)> = (0..30)
        .map(|i| (if i % 3 == 2 { "cold" } else { "hot" }, 50))
        .collect();
    submit(&mut d, &records);
    let units = d.next_call(Instant::now()).unwrap();
    // 1,000-byte aggregates: the hot key's first aggregate is full, its other records
    // wait for the next call, as does anything of a key already in this call.
    let hot = &units[0];
    assert_eq!(&*hot.partition_key, "hot");
    assert!(
        hot.aggregated && hot.data.len() <= 1_000,
        "{}",
        hot.data.len()
    );
    let indexes: Vec<usize> = hot.seqs().map(|s| d.queue.get(s).unwrap().index).collect();
    assert!(indexes.windows(2).all(|w| w[0] < w[1]), "{indexes:?}");
    assert_eq!(
        units.iter().filter(|u| &*u.partition_key == "hot").count(),
        1
    );
    let users = crate::kpl::deaggregate(&hot.data).unwrap();
    assert_eq!(users.len(), hot.seqs().count());
}

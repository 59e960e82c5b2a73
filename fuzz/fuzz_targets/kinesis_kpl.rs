//! The KPL aggregated record format (`tributary_kinesis::kpl`): any record is read or refused
//! without a panic; whatever is read aggregates again into a record that reads the same, with
//! `size_with` predicting every size; any user records survive aggregate then read.
//!
//! Input: a whole record (as read from a shard: most mutations break its MD5 trailer), whose
//! body (the input itself when it lacks the magic) is also framed with the right digest, so
//! that the protobuf reader, not the digest check, decides what is read.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use md5::{Digest, Md5};
use tributary_kinesis::kpl::{self, Aggregator, UserRecord};

/// Aggregates `records` (checking every size prediction) and reads them back.
fn aggregate(records: &[UserRecord]) -> Bytes {
    let mut aggregator = Aggregator::new();
    for (i, record) in records.iter().enumerate() {
        let predicted = aggregator.size_with(record);
        assert_eq!(aggregator.add(record), i as u64, "sub-sequence numbers");
        assert_eq!(aggregator.size(), predicted, "size_with predicts add");
    }
    assert_eq!(aggregator.len(), records.len());
    let size = aggregator.size();
    let data = aggregator.finish();
    assert_eq!(data.len(), size, "size() is the finished record's");
    assert!(aggregator.is_empty(), "finish empties the aggregator");
    assert!(kpl::is_aggregated(&data));
    data
}

/// Whatever was read re-aggregates into a record that reads the same.
fn read_again(data: &Bytes) {
    if !kpl::is_aggregated(data) {
        return;
    }
    if let Ok(records) = kpl::deaggregate(data) {
        let again = kpl::deaggregate(&aggregate(&records)).expect("our own aggregate reads");
        assert_eq!(again, records);
    }
}

/// User records from the input: cut at 0xFF, each piece's first byte picks a partition key and
/// maybe an explicit hash key from small sets (so keys repeat), the rest is its data.
fn records_from(data: &[u8]) -> Vec<UserRecord> {
    const KEYS: [&str; 4] = ["a", "customer-7", "~tributary:0123456789abcdef", "ключ"];
    data.split(|b| *b == 0xff)
        .map(|piece| {
            let (pick, rest) = piece.split_first().unwrap_or((&0, &[]));
            UserRecord {
                partition_key: KEYS[usize::from(pick & 3)].to_owned(),
                explicit_hash_key: (pick & 4 != 0).then(|| format!("{}", u128::from(*pick) << 100)),
                data: Bytes::copy_from_slice(rest),
            }
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let whole = Bytes::copy_from_slice(data);
    read_again(&whole);

    let body = if kpl::is_aggregated(data) {
        &data[kpl::MAGIC.len()..data.len() - 16]
    } else {
        data
    };
    let mut framed = kpl::MAGIC.to_vec();
    framed.extend_from_slice(body);
    framed.extend_from_slice(&Md5::digest(body));
    read_again(&Bytes::from(framed));

    let records = records_from(data);
    let read = kpl::deaggregate(&aggregate(&records)).expect("our own aggregate reads");
    assert_eq!(read, records);
});

//! The Kinesis Producer Library's aggregated record format, read and written.
//!
//! An aggregated record packs many user records, each with its own partition key, into the data
//! of one Kinesis record (format of `aws/amazon-kinesis-producer`, `aggregation-format.md`):
//!
//! ```text
//! magic F3 89 9A C2 | protobuf AggregatedRecord | MD5 of the protobuf bytes (16 bytes)
//!
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;   // skipped on read, never written
//! }
//! ```
//!
//! User record `i` of the Kinesis record with sequence number `S` has sub-sequence number `i`;
//! tributary's position for it is `S:i`. The codec is written by hand (the message is tiny), so
//! no protobuf compiler is needed to build the crate.
//!
//! Unlike the KCL, a record that starts with the magic but whose digest does not match is an
//! error naming the record, never silently delivered as if it were a plain record; and user
//! records whose explicit hash key falls outside the shard's range are delivered, not dropped.

use bytes::{Bytes, BytesMut};
use md5::{Digest, Md5};
use tributary::envelope::{ByteReader, Truncated};

/// The four bytes every aggregated record starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;

/// One user record inside an aggregated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Its own partition key.
    pub partition_key: String,
    /// Its explicit hash key, where the producer set one.
    pub explicit_hash_key: Option<String>,
    /// Its data.
    pub data: Bytes,
}

/// Why an aggregated record could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AggregateError {
    /// The MD5 trailer does not match the protobuf body.
    BadDigest,
    /// The protobuf body is malformed (the reason says where).
    Malformed(String),
}

impl std::fmt::Display for AggregateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AggregateError::BadDigest => f.write_str(
                "it starts with the KPL aggregation magic F3 89 9A C2 but its MD5 trailer does not match its body",
            ),
            AggregateError::Malformed(why) => write!(f, "its KPL aggregated body is malformed: {why}"),
        }
    }
}

/// `true` when `data` has the shape of an aggregated record (magic and room for a digest).
pub fn is_aggregated(data: &[u8]) -> bool {
    data.len() >= MAGIC.len() + DIGEST_LEN && data.starts_with(&MAGIC)
}

/// Splits an aggregated record into its user records. Call only when [`is_aggregated`] holds.
pub fn deaggregate(data: &Bytes) -> Result<Vec<UserRecord>, AggregateError> {
    let body_end = data.len() - DIGEST_LEN;
    let body = data.slice(MAGIC.len()..body_end);
    let digest: [u8; DIGEST_LEN] = Md5::digest(&body).into();
    if digest[..] != data[body_end..] {
        return Err(AggregateError::BadDigest);
    }
    let mut partition_keys = Vec::new();
    let mut hash_keys = Vec::new();
    let mut raw_records = Vec::new();
    let mut reader = Reader::new(&body);
    while !reader.done() {
        let (field, wire) = reader.tag()?;
        match (field, wire) {
            (1, LEN) => partition_keys.push(reader.string("partition_key_table")?),
            (2, LEN) => hash_keys.push(reader.string("explicit_hash_key_table")?),
            (3, LEN) => raw_records.push(reader.bytes()?),
            _ => reader.skip(wire)?,
        }
    }
    raw_records
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            let mut reader = Reader::new(&raw);
            let (mut pk, mut ehk, mut record_data) = (None, None, None);
            while !reader.done() {
                let (field, wire) = reader.tag()?;
                match (field, wire) {
                    (1, VARINT) => pk = Some(reader.varint()?),
                    (2, VARINT) => ehk = Some(reader.varint()?),
                    (3, LEN) => record_data = Some(reader.bytes()?),
                    _ => reader.skip(wire)?,
                }
            }
            let malformed =
                |what: &str| AggregateError::Malformed(format!("user record {index} {what}"));
            let pk = pk.ok_or_else(|| malformed("has no partition_key_index"))?;
            let partition_key = usize::try_from(pk)
                .ok()
                .and_then(|i| partition_keys.get(i))
                .ok_or_else(|| {
                    malformed(&format!(
                        "points at partition key {pk} of {}",
                        partition_keys.len()
                    ))
                })?
                .clone();
            let explicit_hash_key = match ehk {
                None => None,
                Some(i) => Some(
                    usize::try_from(i)
                        .ok()
                        .and_then(|i| hash_keys.get(i))
                        .ok_or_else(|| {
                            malformed(&format!(
                                "points at explicit hash key {i} of {}",
                                hash_keys.len()
                            ))
                        })?
                        .clone(),
                ),
            };
            let data = record_data.ok_or_else(|| malformed("has no data"))?;
            Ok(UserRecord {
                partition_key,
                explicit_hash_key,
                data,
            })
        })
        .collect()
}

/// Builds aggregated records up to a size limit, as the KPL does.
#[derive(Debug, Default)]
pub struct Aggregator {
    partition_keys: Vec<String>,
    hash_keys: Vec<String>,
    /// Encoded `Record` messages.
    records: Vec<Vec<u8>>,
    /// Size of the protobuf body so far.
    body_len: usize,
}

impl Aggregator {
    /// An empty aggregator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of user records added.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// `true` when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The size of the aggregated record's data if `record` were added now.
    pub fn size_with(&self, record: &UserRecord) -> usize {
        let mut extra = 0;
        let pk_index = match self
            .partition_keys
            .iter()
            .position(|k| *k == record.partition_key)
        {
            Some(i) => i,
            None => {
                extra += field_len(record.partition_key.len());
                self.partition_keys.len()
            }
        };
        let ehk_index = record.explicit_hash_key.as_ref().map(|ehk| {
            match self.hash_keys.iter().position(|k| k == ehk) {
                Some(i) => i,
                None => {
                    extra += field_len(ehk.len());
                    self.hash_keys.len()
                }
            }
        });
        extra += field_len(record_len(
            pk_index as u64,
            ehk_index.map(|i| i as u64),
            record.data.len(),
        ));
        MAGIC.len() + self.body_len + extra + DIGEST_LEN
    }

    /// The size of the aggregated record's data now.
    pub fn size(&self) -> usize {
        MAGIC.len() + self.body_len + DIGEST_LEN
    }

    /// Adds a user record; returns its sub-sequence number.
    pub fn add(&mut self, record: &UserRecord) -> u64 {
        let pk_index = index_of(
            &mut self.partition_keys,
            &record.partition_key,
            &mut self.body_len,
        );
        let ehk_index = record
            .explicit_hash_key
            .as_ref()
            .map(|ehk| index_of(&mut self.hash_keys, ehk, &mut self.body_len));
        let mut encoded = Vec::with_capacity(record.data.len() + 24);
        put_tag(&mut encoded, 1, VARINT);
        put_varint(&mut encoded, pk_index);
        if let Some(ehk_index) = ehk_index {
            put_tag(&mut encoded, 2, VARINT);
            put_varint(&mut encoded, ehk_index);
        }
        put_tag(&mut encoded, 3, LEN);
        put_varint(&mut encoded, record.data.len() as u64);
        encoded.extend_from_slice(&record.data);
        self.body_len += field_len(encoded.len());
        self.records.push(encoded);
        (self.records.len() - 1) as u64
    }

    /// The aggregated record's data (magic, body, digest); the aggregator is left empty.
    pub fn finish(&mut self) -> Bytes {
        let mut body = Vec::with_capacity(self.body_len);
        for key in &self.partition_keys {
            put_tag(&mut body, 1, LEN);
            put_varint(&mut body, key.len() as u64);
            body.extend_from_slice(key.as_bytes());
        }
        for key in &self.hash_keys {
            put_tag(&mut body, 2, LEN);
            put_varint(&mut body, key.len() as u64);
            body.extend_from_slice(key.as_bytes());
        }
        for record in &self.records {
            put_tag(&mut body, 3, LEN);
            put_varint(&mut body, record.len() as u64);
            body.extend_from_slice(record);
        }
        debug_assert_eq!(body.len(), self.body_len);
        let mut out = BytesMut::with_capacity(MAGIC.len() + body.len() + DIGEST_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&body);
        out.extend_from_slice(&Md5::digest(&body));
        *self = Aggregator::default();
        out.freeze()
    }
}

fn index_of(table: &mut Vec<String>, key: &str, body_len: &mut usize) -> u64 {
    if let Some(i) = table.iter().position(|k| k == key) {
        return i as u64;
    }
    table.push(key.to_owned());
    *body_len += field_len(key.len());
    (table.len() - 1) as u64
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn varint_len(mut value: u64) -> usize {
    let mut n = 1;
    while value >= 0x80 {
        value >>= 7;
        n += 1;
    }
    n
}

/// Bytes of a length-delimited field (tag of one byte for fields 1..=15).
fn field_len(content: usize) -> usize {
    1 + varint_len(content as u64) + content
}

/// Bytes of an encoded `Record` message.
fn record_len(pk_index: u64, ehk_index: Option<u64>, data: usize) -> usize {
    1 + varint_len(pk_index) + ehk_index.map_or(0, |i| 1 + varint_len(i)) + field_len(data)
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The protobuf layer over [`ByteReader`]: varints and length-delimited fields, each a slice
/// of the input, with errors that say which byte of the body went wrong.
struct Reader<'a> {
    bytes: ByteReader<'a>,
    len: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a Bytes) -> Self {
        Reader {
            bytes: ByteReader::new(data),
            len: data.len(),
        }
    }

    fn done(&self) -> bool {
        self.bytes.position() >= self.len
    }

    fn varint(&mut self) -> Result<u64, AggregateError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.bytes.take(1).map_err(|Truncated { at, .. }| {
                AggregateError::Malformed(format!("truncated varint at byte {at}"))
            })?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(AggregateError::Malformed(format!(
            "varint longer than 10 bytes at byte {}",
            self.bytes.position()
        )))
    }

    fn tag(&mut self) -> Result<(u64, u8), AggregateError> {
        let tag = self.varint()?;
        Ok((tag >> 3, (tag & 7) as u8))
    }

    fn take(&mut self, n: u64) -> Result<Bytes, AggregateError> {
        let past_end = |at: usize| {
            AggregateError::Malformed(format!(
                "a field of {n} bytes at byte {at} runs past the end ({} bytes)",
                self.len
            ))
        };
        let n = usize::try_from(n).map_err(|_| past_end(self.bytes.position()))?;
        self.bytes
            .take(n)
            .map_err(|Truncated { at, .. }| past_end(at))
    }

    fn bytes(&mut self) -> Result<Bytes, AggregateError> {
        let len = self.varint()?;
        self.take(len)
    }

    fn string(&mut self, what: &str) -> Result<String, AggregateError> {
        let raw = self.bytes()?;
        String::from_utf8(raw.to_vec())
            .map_err(|_| AggregateError::Malformed(format!("an entry of {what} is not UTF-8")))
    }

    fn skip(&mut self, wire: u8) -> Result<(), AggregateError> {
        match wire {
            VARINT => self.varint().map(|_| ()),
            FIXED64 => self.take(8).map(|_| ()),
            LEN => self.bytes().map(|_| ()),
            FIXED32 => self.take(4).map(|_| ()),
            other => Err(AggregateError::Malformed(format!(
                "unknown wire type {other} at byte {}",
                self.bytes.position()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn user(pk: &str, ehk: Option<&str>, data: &[u8]) -> UserRecord {
        UserRecord {
            partition_key: pk.to_owned(),
            explicit_hash_key: ehk.map(str::to_owned),
            data: Bytes::copy_from_slice(data),
        }
    }

    /// Bytes produced by AWS's Python library (`aws_kinesis_agg.aggregator.RecordAggregator`,
    /// 1.2.3) for user records (`pk-0`, `data-0`), (`pk-1`, `data-1`, explicit hash key
    /// `12345`), (`pk-0`, `data-2`).
    const FROM_AWS_PYTHON: &str = "f3899ac20a04706b2d300a04706b2d31120531323334351a0a08001a06646174612d301a0c080110001a06646174612d311a0a08001a06646174612d3262926e75823ab31b82285242a092fd5c";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn python_records() -> Vec<UserRecord> {
        vec![
            user("pk-0", None, b"data-0"),
            user("pk-1", Some("12345"), b"data-1"),
            user("pk-0", None, b"data-2"),
        ]
    }

    #[test]
    fn round_trip_keeps_keys_order_and_data() {
        let records = vec![
            user("a", None, b"one"),
            user("b", Some("340282366920938463463374607431768211455"), b""),
            user("a", None, &[0xff; 300]),
        ];
        let mut agg = Aggregator::new();
        for (i, r) in records.iter().enumerate() {
            let predicted = agg.size_with(r);
            assert_eq!(agg.add(r), i as u64);
            assert_eq!(
                agg.size(),
                predicted,
                "size_with predicts the size after add"
            );
        }
        let data = agg.finish();
        assert!(agg.is_empty());
        assert!(is_aggregated(&data));
        assert_eq!(deaggregate(&data).unwrap(), records);
    }

    #[test]
    fn a_bad_digest_is_an_error() {
        let mut agg = Aggregator::new();
        agg.add(&user("k", None, b"x"));
        let mut data = agg.finish().to_vec();
        let last = data.len() - 1;
        data[last] ^= 1;
        assert_eq!(
            deaggregate(&Bytes::from(data)),
            Err(AggregateError::BadDigest)
        );
    }

    #[test]
    fn a_dangling_key_index_is_malformed_not_a_panic() {
        let mut body = Vec::new();
        let mut record = Vec::new();
        put_tag(&mut record, 1, VARINT);
        put_varint(&mut record, 5);
        put_tag(&mut record, 3, LEN);
        put_varint(&mut record, 0);
        put_tag(&mut body, 3, LEN);
        put_varint(&mut body, record.len() as u64);
        body.extend_from_slice(&record);
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&body);
        data.extend_from_slice(&Md5::digest(&body));
        let err = deaggregate(&Bytes::from(data)).unwrap_err();
        assert!(err.to_string().contains("partition key 5 of 0"), "{err}");
    }

    fn framed(body: &[u8]) -> Bytes {
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(body);
        data.extend_from_slice(&Md5::digest(body));
        Bytes::from(data)
    }

    #[test]
    fn a_truncated_body_names_the_byte() {
        // Field 3 (records) says 50 bytes follow; 2 do.
        let err = deaggregate(&framed(&[0x1a, 50, 0, 0])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "its KPL aggregated body is malformed: a field of 50 bytes at byte 2 runs past the end (4 bytes)"
        );
        // A varint whose continuation bit promises a byte that is not there.
        let err = deaggregate(&framed(&[0x08, 0x80])).unwrap_err();
        assert!(
            err.to_string().ends_with("truncated varint at byte 2"),
            "{err}"
        );
        let err = deaggregate(&framed(&[0x0f])).unwrap_err();
        assert!(
            err.to_string().ends_with("unknown wire type 7 at byte 1"),
            "{err}"
        );
    }

    #[test]
    fn records_from_the_aws_python_library_decode() {
        let data = Bytes::from(unhex(FROM_AWS_PYTHON));
        assert!(is_aggregated(&data));
        assert_eq!(deaggregate(&data).unwrap(), python_records());
    }

    #[test]
    fn aggregates_are_byte_for_byte_what_the_aws_library_writes() {
        let mut agg = Aggregator::new();
        for r in &python_records() {
            agg.add(r);
        }
        assert_eq!(agg.finish().to_vec(), unhex(FROM_AWS_PYTHON));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&data);
            framed.extend_from_slice(&Md5::digest(&data));
            let _ = deaggregate(&Bytes::from(framed));
        }

        #[test]
        fn any_records_round_trip(records in prop::collection::vec(
            ("[a-z]{1,4}", prop::option::of("[0-9]{1,39}"), prop::collection::vec(any::<u8>(), 0..300)),
            1..20,
        )) {
            let records: Vec<UserRecord> = records
                .into_iter()
                .map(|(pk, ehk, data)| UserRecord { partition_key: pk, explicit_hash_key: ehk, data: Bytes::from(data) })
                .collect();
            let mut agg = Aggregator::new();
            for r in &records {
                let predicted = agg.size_with(r);
                agg.add(r);
                prop_assert_eq!(agg.size(), predicted);
            }
            prop_assert_eq!(deaggregate(&agg.finish()).unwrap(), records);
        }
    }
}

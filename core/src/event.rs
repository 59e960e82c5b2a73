//! The event model shared by every backend.

use bytes::Bytes;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod small;
use small::SmallStr;

/// Milliseconds since the Unix epoch, the precision every backend can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// A timestamp `millis` milliseconds after the Unix epoch (negative is before).
    pub const fn from_millis(millis: i64) -> Self {
        Timestamp(millis)
    }
    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }
    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Err(e) => Timestamp(-i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        if t.0 >= 0 {
            UNIX_EPOCH + Duration::from_millis(t.0 as u64)
        } else {
            UNIX_EPOCH - Duration::from_millis(t.0.unsigned_abs())
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// Ordered event headers: names are UTF-8, values are arbitrary bytes, duplicates allowed and
/// kept in order (Kafka semantics, the richest of the backends).
///
/// Cloning is a reference-count increment (the list is shared until one copy changes), so a
/// consumer can keep an event for redelivery while handing out a copy at no cost. An empty
/// list allocates nothing, and a name given as a `&'static str` to
/// [`append_static`](Headers::append_static) or [`insert_static`](Headers::insert_static) is
/// kept without a copy: a replicator that stamps the same few names on every event (the
/// bridge's lineage headers) then allocates nothing per name.
#[derive(Clone, Default)]
pub struct Headers(Option<Arc<List>>);

/// A header name as stored: borrowed for names that live for the whole program, owned
/// otherwise. Only [`Headers`] sees the difference.
type HeaderName = std::borrow::Cow<'static, str>;

/// The list, with its first two headers inside the shared allocation: most events carry one
/// or two, and an `Arc<Vec>` cost two allocations (and two frees) per event for them, about
/// 120 instructions of the Kafka consumer's ~8,000 per event. Longer lists move to a vector.
type List = smallvec::SmallVec<[(HeaderName, Bytes); 2]>;

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers::default()
    }
    /// No headers, with room for `capacity` of them before the list grows.
    pub fn with_capacity(capacity: usize) -> Self {
        Headers((capacity > 0).then(|| Arc::new(List::with_capacity(capacity))))
    }
    fn slice(&self) -> &[(HeaderName, Bytes)] {
        self.0.as_deref().map_or(&[], List::as_slice)
    }
    fn list(&mut self) -> &mut List {
        Arc::make_mut(self.0.get_or_insert_with(Arc::default))
    }
    /// Appends a header, keeping any earlier one with the same name.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        self.list()
            .push((HeaderName::Owned(name.into()), value.into()));
    }
    /// [`append`](Headers::append) for a name that lives for the whole program (a constant):
    /// kept as it is, without a copy.
    pub fn append_static(&mut self, name: &'static str, value: impl Into<Bytes>) {
        self.list().push((HeaderName::Borrowed(name), value.into()));
    }
    /// Replaces every header named `name` with one header at the position of the first.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        self.insert_name(HeaderName::Owned(name.into()), value.into());
    }
    /// [`insert`](Headers::insert) for a name that lives for the whole program (a constant):
    /// kept as it is, without a copy.
    pub fn insert_static(&mut self, name: &'static str, value: impl Into<Bytes>) {
        self.insert_name(HeaderName::Borrowed(name), value.into());
    }
    fn insert_name(&mut self, name: HeaderName, value: Bytes) {
        match self.slice().iter().position(|(n, _)| *n == name) {
            Some(first) => {
                let list = self.list();
                list[first].1 = value;
                let mut index = 0;
                list.retain(|(n, _)| {
                    let keep = index <= first || *n != name;
                    index += 1;
                    keep
                });
            }
            None => self.list().push((name, value)),
        }
    }
    /// Removes every header named `name`; returns how many were removed.
    pub fn remove(&mut self, name: &str) -> usize {
        if !self.slice().iter().any(|(n, _)| n == name) {
            return 0;
        }
        let list = self.list();
        let before = list.len();
        list.retain(|(n, _)| n != name);
        before - list.len()
    }
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.slice().iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Bytes> + 'a {
        self.slice()
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v)
    }
    /// All headers in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Bytes)> {
        self.slice().iter().map(|(n, v)| (n.as_ref(), v))
    }
    /// Appends every header of `other`, in order (names are shared, not copied, where
    /// `other` holds them without a copy).
    pub fn extend_from(&mut self, other: &Headers) {
        if other.is_empty() {
            return;
        }
        self.list().extend(other.slice().iter().cloned());
    }
    /// Number of headers (duplicates counted).
    pub fn len(&self) -> usize {
        self.slice().len()
    }
    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.slice().is_empty()
    }
    /// Total bytes of names and values, used for size limits.
    pub fn encoded_len(&self) -> usize {
        self.slice().iter().map(|(n, v)| n.len() + v.len()).sum()
    }
}

impl PartialEq for Headers {
    /// The same headers in the same order, however each list is held.
    fn eq(&self, other: &Self) -> bool {
        self.slice() == other.slice()
    }
}

impl Eq for Headers {}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Headers").field(&self.slice()).finish()
    }
}

impl<N: Into<String>, V: Into<Bytes>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let list: List = iter
            .into_iter()
            .map(|(n, v)| (HeaderName::Owned(n.into()), v.into()))
            .collect();
        Headers((!list.is_empty()).then(|| Arc::new(list)))
    }
}

impl IntoIterator for Headers {
    type Item = (String, Bytes);
    type IntoIter = std::vec::IntoIter<(String, Bytes)>;
    fn into_iter(self) -> Self::IntoIter {
        let list = self.0.map(Arc::unwrap_or_clone).unwrap_or_default();
        list.into_iter()
            .map(|(n, v)| (n.into_owned(), v))
            .collect::<Vec<_>>()
            .into_iter()
    }
}

/// One event: what a producer sends and a consumer receives.
///
/// Cloning is cheap: key, payload and header values are reference-counted [`Bytes`].
///
/// ```
/// use tributary::Event;
/// let event = Event::new("hello")
///     .with_key("user-7")
///     .with_header("trace-id", "abc")
///     .with_timestamp(tributary::Timestamp::from_millis(1_700_000_000_000));
/// assert_eq!(event.payload.as_ref(), b"hello");
/// assert_eq!(event.headers.get("trace-id").unwrap().as_ref(), b"abc");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// Routing and ordering key; events with the same key keep their order.
    pub key: Option<Bytes>,
    /// The body; may be empty.
    pub payload: Bytes,
    /// Ordered headers with binary values.
    pub headers: Headers,
    /// Event time set by the producer, if any.
    pub timestamp: Option<Timestamp>,
}

impl Event {
    /// An event with this payload and nothing else.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Event {
            payload: payload.into(),
            ..Event::default()
        }
    }
    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }
    /// Appends a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.append(name, value);
        self
    }
    /// Sets the event time.
    pub fn with_timestamp(mut self, timestamp: Timestamp) -> Self {
        self.timestamp = Some(timestamp);
        self
    }
    /// Bytes counted against a backend's event size limit: key + payload + headers.
    pub fn encoded_len(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len) + self.payload.len() + self.headers.encoded_len()
    }
}

/// A partition id: `"0"` for Kafka, a shard id for Kinesis. Cheap to clone: ids of up to 24
/// bytes are held inline (no allocation), longer ones share one allocation.
///
/// Ordered naturally: runs of digits compare as numbers, so `"9" < "10"` and
/// `"shard-9" < "shard-10"`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId(SmallStr);

impl PartitionId {
    /// A partition id from its string form.
    pub fn new(id: impl AsRef<str>) -> Self {
        PartitionId(SmallStr::new(id.as_ref()))
    }
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
    /// The numeric index for backends whose partitions are numbered.
    pub fn as_index(&self) -> Option<u32> {
        self.0.to_u64().and_then(|n| u32::try_from(n).ok())
    }
}

impl From<u32> for PartitionId {
    fn from(i: u32) -> Self {
        PartitionId(SmallStr::from_u64(u64::from(i)))
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PartitionId").field(&self.as_str()).finish()
    }
}

/// An opaque, serialisable, per-partition position: a Kafka offset, a Kinesis sequence number,
/// a Pulsar message id. It is what a checkpoint stores. Cheap to clone: positions of up to 24
/// bytes (every offset) are held inline, with no allocation; longer ones share one allocation.
///
/// Ordered naturally (digit runs as numbers), which is the log order for offsets and sequence
/// numbers: `Position::from_offset(9) < Position::from_offset(10)`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position(SmallStr);

impl Position {
    /// A position from its serialised form.
    pub fn new(token: impl AsRef<str>) -> Self {
        Position(SmallStr::new(token.as_ref()))
    }
    /// A position formatted from parts, without the `String` that `Position::new(format!(…))`
    /// makes first (ids of up to 96 bytes are written on the stack).
    ///
    /// ```
    /// use tributary::Position;
    /// let (ledger, entry) = (12, 3);
    /// let p = Position::from_fmt(format_args!("{ledger}:{entry}:-1"));
    /// assert_eq!(p, Position::new("12:3:-1"));
    /// ```
    pub fn from_fmt(args: fmt::Arguments<'_>) -> Self {
        Position(SmallStr::from_fmt(args))
    }
    /// A numeric offset (Kafka, the local backend).
    pub fn from_offset(offset: u64) -> Self {
        Position(SmallStr::from_u64(offset))
    }
    /// `Position::from_offset(offset + 1)` for a position made by
    /// [`Position::from_offset`], by incrementing its digits in place (a log appending in
    /// order makes each position from the one before); `None` for any other position.
    pub(crate) fn next_offset(&self) -> Option<Self> {
        self.0.successor().map(Position)
    }
    /// The numeric offset, for backends whose positions are numbers.
    pub fn as_offset(&self) -> Option<u64> {
        self.0.to_u64()
    }
    /// The serialised form.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Position").field(&self.as_str()).finish()
    }
}

/// What a successful send returns: where the event landed, as far as the backend tells.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Receipt {
    /// The partition the event was written to.
    pub partition: Option<PartitionId>,
    /// The event's position in that partition.
    pub position: Option<Position>,
}

/// Where a consumer of a group without a checkpoint starts.
///
/// A group that has committed progress resumes from it, whatever start it is given; the start
/// applies only to partitions the group has never committed in.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tributary::Result<()> {
/// use tributary::{ConsumerOptions, Event, StartPosition, Timestamp};
///
/// // From text, as the command line and configuration files take it:
/// assert_eq!("earliest".parse::<StartPosition>()?, StartPosition::Earliest);
/// let may_day: StartPosition = "2024-05-01T10:00:00Z".parse()?;
/// assert_eq!(may_day, StartPosition::Timestamp(Timestamp::from_millis(1_714_557_600_000)));
/// assert_eq!("@1714557600000".parse::<StartPosition>()?, may_day);
///
/// // At a position a receipt reported (inclusive):
/// let backend = tributary::connect("memory://?partitions=1").await?;
/// let producer = backend.producer("orders").await?;
/// producer.send(Event::new("before")).await?;
/// let receipt = producer.send(Event::new("from here")).await?;
/// let start = StartPosition::Position(receipt.position.expect("memory:// reports positions"));
/// let consumer = backend.consumer("orders", ConsumerOptions::new("audit").start(start)).await?;
/// assert_eq!(consumer.receive().await?.event.payload.as_ref(), b"from here");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StartPosition {
    /// The oldest retained event.
    Earliest,
    /// Only events written after the consumer joined.
    #[default]
    Latest,
    /// The first event with a timestamp at or after this time, in each partition.
    Timestamp(Timestamp),
    /// This position (inclusive) in every partition where it is valid.
    Position(Position),
}

impl std::str::FromStr for StartPosition {
    type Err = crate::Error;
    /// Parses `earliest`, `latest`, an RFC 3339 time, `@<millis>` or a position token.
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "earliest" | "beginning" | "oldest" => Ok(StartPosition::Earliest),
            "latest" | "end" | "newest" => Ok(StartPosition::Latest),
            "" => Err(crate::Error::config(
                "empty start position: use earliest, latest, a time like 2024-05-01T10:00:00Z, @<epoch millis> or a position",
            )),
            _ => {
                if let Some(millis) = s.strip_prefix('@') {
                    return millis
                        .parse::<i64>()
                        .map(|m| StartPosition::Timestamp(Timestamp::from_millis(m)))
                        .map_err(|_| {
                            crate::Error::config(format!(
                                "start position `{s}`: `@` must be followed by epoch milliseconds"
                            ))
                        });
                }
                if s.contains('T') && s.contains(':') {
                    return crate::time::parse_rfc3339(s)
                        .map(StartPosition::Timestamp)
                        .ok_or_else(|| {
                            crate::Error::config(format!(
                                "start position `{s}` looks like a time but is not RFC 3339 (e.g. 2024-05-01T10:00:00Z)"
                            ))
                        });
                }
                Ok(StartPosition::Position(Position::new(s)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_keep_duplicates_in_order_and_insert_collapses() {
        let mut h = Headers::new();
        h.append("a", "1");
        h.append("b", "2");
        h.append("a", "3");
        assert_eq!(h.get_all("a").count(), 2);
        h.insert("a", "x");
        let v: Vec<_> = h.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
        assert_eq!(
            v,
            vec![
                ("a".to_string(), Bytes::from("x")),
                ("b".to_string(), Bytes::from("2"))
            ]
        );
        assert_eq!(h.remove("a"), 1);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn static_and_owned_names_are_the_same_headers() {
        let mut a = Headers::with_capacity(4);
        assert_eq!(a, Headers::new(), "empty, whatever the capacity");
        a.append_static("x", "1");
        a.append("y", "2");
        a.append_static("x", "3");
        let b: Headers = [("x", "1"), ("y", "2"), ("x", "3")].into_iter().collect();
        assert_eq!(a, b);
        assert_eq!(a.get_all("x").count(), 2);
        let mut c = a.clone();
        c.insert_static("x", "9");
        assert_eq!(
            c.iter().map(|(n, v)| (n, v.as_ref())).collect::<Vec<_>>(),
            [("x", &b"9"[..]), ("y", b"2")]
        );
        assert_eq!(a.len(), 3, "the clone changed, not the original");
        let mut d = Headers::new();
        d.extend_from(&a);
        assert_eq!(d, a);
        let owned: Vec<(String, Bytes)> = a.into_iter().collect();
        assert_eq!(owned[2], ("x".to_string(), Bytes::from("3")));
        assert_eq!(Headers::new().into_iter().count(), 0);
    }

    #[test]
    fn start_positions_parse() {
        assert_eq!(
            "earliest".parse::<StartPosition>().unwrap(),
            StartPosition::Earliest
        );
        assert_eq!(
            "@1000".parse::<StartPosition>().unwrap(),
            StartPosition::Timestamp(Timestamp::from_millis(1000))
        );
        assert_eq!(
            "1970-01-01T00:00:01Z".parse::<StartPosition>().unwrap(),
            StartPosition::Timestamp(Timestamp::from_millis(1000))
        );
        assert_eq!(
            "42".parse::<StartPosition>().unwrap(),
            StartPosition::Position(Position::from_offset(42))
        );
        assert!("@x".parse::<StartPosition>().is_err());
        assert!("2024-13-45T99:00:00Z".parse::<StartPosition>().is_err());
    }

    #[test]
    fn positions_and_partitions_order_numerically() {
        assert!(Position::from_offset(9) < Position::from_offset(10));
        assert!(PartitionId::from(9) < PartitionId::from(10));
        assert!(PartitionId::new("shardId-9") < PartitionId::new("shardId-10"));
        assert!(Position::new("1:9:0:0") < Position::new("1:10:0:0"));
        assert!(Position::new("07") != Position::new("7"));
        assert_ne!(
            Position::new("07").cmp(&Position::new("7")),
            std::cmp::Ordering::Equal
        );
        let mut ids: Vec<PartitionId> = (0..12u32).rev().map(PartitionId::from).collect();
        ids.sort();
        assert_eq!(ids, (0..12u32).map(PartitionId::from).collect::<Vec<_>>());
    }

    proptest::proptest! {
        #[test]
        fn natural_order_is_a_total_order_consistent_with_equality(
            a in "[a-c0-9]{0,6}|[0-9]{20,30}", b in "[a-c0-9]{0,6}|[0-9]{20,30}",
            c in "[a-c0-9]{0,6}|[0-9]{20,30}"
        ) {
            use std::cmp::Ordering::*;
            let (x, y, z) = (Position::new(&a), Position::new(&b), Position::new(&c));
            proptest::prop_assert_eq!(x.cmp(&y) == Equal, x == y);
            proptest::prop_assert_eq!(x.cmp(&y), y.cmp(&x).reverse());
            if x <= y && y <= z { proptest::prop_assert!(x <= z); }
        }
    }

    #[test]
    fn timestamps_convert_both_ways() {
        let t = Timestamp::from_millis(-1500);
        assert_eq!(Timestamp::from(SystemTime::from(t)), t);
    }
}

//! Lineage headers added to every replicated event, and the stream identities that stop
//! circular replication.
//!
//! Every copy carries two headers: [`ORIGIN`], where it was read (backend, stream, partition,
//! position) and which route copied it, in one value ([`Origin`] reads it back); and [`PATH`],
//! the streams it has been replicated from. Two rather than one per field: librdkafka
//! allocates, copies, frames and frees each header of each record, and every header byte goes
//! through the broker. Against the path alone, the five origin headers there used to be took
//! 40% of a Kafka→Kafka daemon's CPU per event and half its throughput; in one value they cost
//! 13% less CPU than as five (`docs/benchmarks/NOTES.md`, "The lineage headers' cost").
//!
//! Headers named `tributary-*` belong to the bridge. The [`PATH`] found on an event is
//! trusted, whoever wrote it: a bridge cannot tell a header another bridge wrote from one an
//! application wrote, and loop prevention between bridges in different processes depends on
//! reading it. So an event whose path names the sink stream is not copied there (it is counted
//! as a loop copy); identities are `scheme://host:port/path/stream` or a configured cluster
//! name, which no application writes by accident. A route reading a stream that applications
//! write directly sets [`RouteSpec::reset_lineage`] (`lineage = "reset"` in the file): it
//! skips the loop check and starts each path afresh.

use bytes::{BufMut, Bytes, BytesMut};
use tributary::{Delivery, Event, Headers, PartitionId, Position};

use super::RouteSpec;

/// Where the event was read and which route copied it, replaced at each hop:
/// `route=R;backend=B;stream=S;partition=P;position=N` (`partition` and `position` only when
/// the source has them; `%` and `;` in a value written as `%25` and `%3B`). [`Origin::of`]
/// reads it back, for example to drop duplicates by source position.
pub const ORIGIN: &str = "tributary-origin";
/// Every stream the event has been replicated from, oldest first, comma-separated
/// [`stream_identity`]s. Unlike [`ORIGIN`] it is extended, not replaced, at each hop: a route
/// drops an event that has already been in its sink stream, which is what stops bidirectional
/// (or longer circular) replication from looping.
pub const PATH: &str = "tributary-path";

/// The [`ORIGIN`] header's fields.
///
/// ```
/// use tributary::Event;
/// use tributary_bridge::route::lineage::{ORIGIN, Origin};
///
/// let copy = Event::new("x").with_header(ORIGIN, "route=eu-to-us;backend=kafka;stream=orders;partition=3;position=1042");
/// let origin = Origin::of(&copy).unwrap();
/// assert_eq!(origin.stream, "orders");
/// assert_eq!(origin.position.as_deref(), Some("1042"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The route that copied the event.
    pub route: String,
    /// The source backend's URL scheme (`kafka`, `pulsar`, …).
    pub backend: String,
    /// The source stream.
    pub stream: String,
    /// The source partition, when the source has partitions.
    pub partition: Option<String>,
    /// The event's position in that partition, when the source gives one.
    pub position: Option<String>,
}

impl Origin {
    /// The origin recorded on `event`; `None` without an [`ORIGIN`] header or with one that
    /// does not read as one.
    pub fn of(event: &Event) -> Option<Origin> {
        Origin::parse(event.headers.get(ORIGIN)?)
    }

    /// Reads an [`ORIGIN`] header value; `None` when a field is missing or not UTF-8.
    pub fn parse(value: &[u8]) -> Option<Origin> {
        let text = std::str::from_utf8(value).ok()?;
        let (mut route, mut backend, mut stream, mut partition, mut position) =
            (None, None, None, None, None);
        for field in text.split(';') {
            let (name, value) = field.split_once('=')?;
            let value = unescape(value)?;
            match name {
                "route" => route = Some(value),
                "backend" => backend = Some(value),
                "stream" => stream = Some(value),
                "partition" => partition = Some(value),
                "position" => position = Some(value),
                // A field a later version adds is skipped, not an error.
                _ => {}
            }
        }
        Some(Origin {
            route: route?,
            backend: backend?,
            stream: stream?,
            partition,
            position,
        })
    }
}

/// Appends `value` to `out` with `%` and `;` escaped, so fields split on `;` unambiguously.
fn escape_into(out: &mut BytesMut, value: &[u8]) {
    if !value.iter().any(|b| matches!(b, b'%' | b';')) {
        out.put_slice(value);
        return;
    }
    for &b in value {
        match b {
            b'%' => out.put_slice(b"%25"),
            b';' => out.put_slice(b"%3B"),
            _ => out.put_u8(b),
        }
    }
}

fn unescape(value: &str) -> Option<String> {
    if !value.contains('%') {
        return Some(value.to_string());
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3)?;
        out.push(match code {
            "25" => '%',
            "3B" | "3b" => ';',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// Whether `event` has already been in the stream `identity`.
pub fn visited(event: &Event, identity: &str) -> bool {
    event.headers.get(PATH).is_some_and(|path| {
        path.split(|b| *b == b',')
            .any(|hop| hop == identity.as_bytes())
    })
}

/// The name of a stream that stays the same wherever it is reached from: `cluster` (when the
/// configuration names one, because the same cluster may be reached by different addresses)
/// or the URL's scheme, address and path, without credentials or options; then `/stream`.
/// Commas are escaped so identities can be listed in [`PATH`].
pub fn stream_identity(url: &str, cluster: Option<&str>, stream: &str) -> String {
    let place = match cluster {
        Some(cluster) => cluster.to_string(),
        None => match tributary::parse_url(url) {
            Ok(u) => {
                let mut place = format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""));
                if let Some(port) = u.port() {
                    place.push_str(&format!(":{port}"));
                }
                place.push_str(u.path().trim_end_matches('/'));
                place
            }
            Err(_) => url.to_string(),
        },
    };
    format!("{place}/{stream}").replace(',', "%2C")
}

/// The lineage values that are the same for every event of a route, made once per route
/// rather than for every event: the source's identity, and per source partition the
/// [`ORIGIN`] value up to its position.
pub(super) struct RouteLineage {
    /// The path found on an event is ignored (see [`super::RouteSpec::reset_lineage`]).
    reset: bool,
    /// `route=…;backend=…;stream=…`: the origin of an event without a partition.
    fixed: Bytes,
    source_identity: Bytes,
    /// Per partition seen so far (a source has few; see `MAX_PARTITIONS`), the origin up to
    /// and including `;partition=P`.
    partitions: Vec<(PartitionId, Bytes)>,
    /// The chunk origin values are cut from: one allocation for dozens of events instead of
    /// one per event. A chunk lives until the last event cut from it is written and dropped.
    values: BytesMut,
}

impl RouteLineage {
    /// Partition prefixes kept at most; beyond, one is made per event (a Kinesis stream
    /// resharding for months could otherwise grow the list without bound).
    const MAX_PARTITIONS: usize = 4096;

    /// Bytes per value chunk: an origin takes 50–100 bytes, so this holds about a hundred.
    const VALUE_CHUNK: usize = 8192;

    pub(super) fn new(spec: &RouteSpec) -> Self {
        let mut fixed = BytesMut::new();
        fixed.put_slice(b"route=");
        escape_into(&mut fixed, spec.name.as_bytes());
        fixed.put_slice(b";backend=");
        escape_into(&mut fixed, spec.source.scheme().as_bytes());
        fixed.put_slice(b";stream=");
        escape_into(&mut fixed, spec.source_stream.as_bytes());
        RouteLineage {
            reset: spec.reset_lineage,
            fixed: fixed.freeze(),
            source_identity: Bytes::from(spec.source_identity.clone()),
            partitions: Vec::new(),
            values: BytesMut::new(),
        }
    }

    fn partition_prefix(&mut self, partition: &PartitionId) -> Bytes {
        if let Some((_, prefix)) = self.partitions.iter().find(|(p, _)| p == partition) {
            return prefix.clone();
        }
        let mut prefix = BytesMut::with_capacity(self.fixed.len() + 16);
        prefix.put_slice(&self.fixed);
        prefix.put_slice(b";partition=");
        escape_into(&mut prefix, partition.as_str().as_bytes());
        let prefix = prefix.freeze();
        if self.partitions.len() < Self::MAX_PARTITIONS {
            self.partitions.push((partition.clone(), prefix.clone()));
        }
        prefix
    }

    /// The [`ORIGIN`] value of an event read at `partition` and `position`.
    fn origin(&mut self, partition: Option<&PartitionId>, position: Option<&Position>) -> Bytes {
        let prefix = match partition {
            Some(partition) => self.partition_prefix(partition),
            None => self.fixed.clone(),
        };
        let position = position.map(|p| p.as_str().as_bytes());
        // Escaping at most triples a position.
        let room = prefix.len() + position.map_or(0, |p| ";position=".len() + 3 * p.len());
        if self.values.capacity() - self.values.len() < room {
            self.values = BytesMut::with_capacity(room.max(Self::VALUE_CHUNK));
        }
        self.values.put_slice(&prefix);
        if let Some(position) = position {
            self.values.put_slice(b";position=");
            escape_into(&mut self.values, position);
        }
        self.values.split().freeze()
    }
}

/// Prefix of every header the bridge writes.
const OWN_PREFIX: &str = "tributary-";

pub(super) fn with_lineage(
    keep_key: bool,
    fixed: &mut RouteLineage,
    d: &Delivery,
    mut event: Event,
) -> Event {
    if !keep_key {
        event.key = None;
    }
    let path = match d.event.headers.get(PATH) {
        Some(path) if !path.is_empty() && !fixed.reset => {
            let mut extended = Vec::with_capacity(path.len() + 1 + fixed.source_identity.len());
            extended.extend_from_slice(path);
            extended.push(b',');
            extended.extend_from_slice(&fixed.source_identity);
            Bytes::from(extended)
        }
        _ => fixed.source_identity.clone(),
    };
    let lineage = [
        (
            ORIGIN,
            fixed.origin(d.partition.as_ref(), d.position.as_ref()),
        ),
        (PATH, path),
    ];
    if event.headers.iter().any(|(n, _)| n.starts_with(OWN_PREFIX)) {
        // Replaces what an earlier hop (or an application) wrote under the same names.
        for (name, value) in lineage {
            event.headers.insert_static(name, value);
        }
    } else {
        // The usual case, none of ours yet: one list of the right size, built once, instead
        // of searching inserts that grow it; the names are constants, not copied.
        let mut headers = Headers::with_capacity(event.headers.len() + lineage.len());
        headers.extend_from(&event.headers);
        for (name, value) in lineage {
            headers.append_static(name, value);
        }
        event.headers = headers;
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the route writes reads back as it was, separators and escapes included.
    #[test]
    fn escaped_values_read_back() {
        for value in ["plain", "a;b", "50%", "%3B", ";;%%", "", "ünï;cödé"] {
            let mut field = BytesMut::from(&b"route=r;backend=b;stream="[..]);
            escape_into(&mut field, value.as_bytes());
            field.put_slice(b";position=");
            escape_into(&mut field, value.as_bytes());
            let origin = Origin::parse(&field).unwrap_or_else(|| panic!("{value:?}"));
            assert_eq!(origin.stream, value);
            assert_eq!(origin.position.as_deref(), Some(value));
        }
    }
}

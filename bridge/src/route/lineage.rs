//! Lineage headers added to every replicated event, and the stream identities that stop
//! circular replication.
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

/// Scheme of the backend the event was read from.
pub const BACKEND: &str = "tributary-origin-backend";
/// Stream it was read from.
pub const STREAM: &str = "tributary-origin-stream";
/// Partition it was read from.
pub const PARTITION: &str = "tributary-origin-partition";
/// Position it was read at.
pub const POSITION: &str = "tributary-origin-position";
/// Route that copied it.
pub const ROUTE: &str = "tributary-route";
/// Every stream the event has been replicated from, oldest first, comma-separated
/// [`stream_identity`]s. Unlike the headers above it is extended, not replaced, at
/// each hop: a route drops an event that has already been in its sink stream, which is what
/// stops bidirectional (or longer circular) replication from looping.
pub const PATH: &str = "tributary-path";

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
/// rather than allocated again for every event; and each source partition's id as a header
/// value, made once per partition.
pub(super) struct RouteLineage {
    /// The path found on an event is ignored (see [`super::RouteSpec::reset_lineage`]).
    reset: bool,
    backend: Bytes,
    stream: Bytes,
    route: Bytes,
    source_identity: Bytes,
    /// Header values of the partitions seen so far (a source has few; see `MAX_PARTITIONS`).
    partitions: Vec<(PartitionId, Bytes)>,
    /// The chunk position values are cut from: one allocation for hundreds of events instead
    /// of one per event. A chunk lives until the last event cut from it is written and dropped.
    positions: BytesMut,
}

impl RouteLineage {
    /// Partition values kept at most; beyond, a value is made per event (a Kinesis stream
    /// resharding for months could otherwise grow the list without bound).
    const MAX_PARTITIONS: usize = 4096;

    pub(super) fn new(spec: &RouteSpec) -> Self {
        RouteLineage {
            reset: spec.reset_lineage,
            backend: Bytes::from_static(spec.source.scheme().as_bytes()),
            stream: Bytes::from(spec.source_stream.clone()),
            route: Bytes::from(spec.name.clone()),
            source_identity: Bytes::from(spec.source_identity.clone()),
            partitions: Vec::new(),
            positions: BytesMut::new(),
        }
    }

    /// Bytes per position chunk: offsets take a few bytes, so this holds hundreds.
    const POSITION_CHUNK: usize = 4096;

    fn position(&mut self, position: &Position) -> Bytes {
        let text = position.as_str().as_bytes();
        if self.positions.capacity() - self.positions.len() < text.len() {
            self.positions = BytesMut::with_capacity(text.len().max(Self::POSITION_CHUNK));
        }
        self.positions.put_slice(text);
        self.positions.split().freeze()
    }

    fn partition(&mut self, partition: &PartitionId) -> Bytes {
        if let Some((_, value)) = self.partitions.iter().find(|(p, _)| p == partition) {
            return value.clone();
        }
        let value = Bytes::copy_from_slice(partition.as_str().as_bytes());
        if self.partitions.len() < Self::MAX_PARTITIONS {
            self.partitions.push((partition.clone(), value.clone()));
        }
        value
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
        (BACKEND, Some(fixed.backend.clone())),
        (STREAM, Some(fixed.stream.clone())),
        (PARTITION, d.partition.as_ref().map(|p| fixed.partition(p))),
        (POSITION, d.position.as_ref().map(|p| fixed.position(p))),
        (ROUTE, Some(fixed.route.clone())),
        (PATH, Some(path)),
    ];
    if event.headers.iter().any(|(n, _)| n.starts_with(OWN_PREFIX)) {
        // Replaces what an earlier hop (or an application) wrote under the same names.
        for (name, value) in lineage {
            if let Some(value) = value {
                event.headers.insert_static(name, value);
            }
        }
    } else {
        // The usual case, none of ours yet: one list of the right size, built once, instead
        // of six searching inserts that grow it twice; the names are constants, not copied.
        let mut headers = Headers::with_capacity(event.headers.len() + lineage.len());
        headers.extend_from(&event.headers);
        for (name, value) in lineage {
            if let Some(value) = value {
                headers.append_static(name, value);
            }
        }
        event.headers = headers;
    }
    event
}

//! The offset book: how a checkpoint written by sequence number also carries the service's
//! offset, which is what Microsoft's SDKs start from.
//!
//! The group engine checkpoints positions (Event Hubs sequence numbers); the Blob layout wants
//! the offset of that event too. Readers record each event's offset as they read it, and the
//! store takes it back out when it writes that event's checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

/// The service's offset of each sequence number a group's readers have read and not yet
/// checkpointed, so a checkpoint written by position (the sequence number) can carry the
/// offset other SDKs start from. Filled by the partition readers, emptied by checkpoints;
/// keyed by (group, hub, partition). A store that writes no offsets (checkpoints in memory)
/// gets a book that keeps nothing: nothing would ever empty it, so it would hold one entry per
/// event read for as long as the reader lives.
#[derive(Debug, Clone)]
pub(crate) struct OffsetBook(Option<Arc<Mutex<HashMap<BookKey, Page>>>>);

/// (group, hub, partition).
type BookKey = (String, String, String);

/// One partition's offsets by sequence number.
type Page = Arc<Mutex<BTreeMap<i64, String>>>;

/// A reader's page of the book: recording an event's offset takes neither the whole book's
/// lock (which every partition's reader would contend for) nor a key built per event.
#[derive(Debug, Clone)]
pub(crate) struct PartitionOffsets(Option<Page>);

impl PartitionOffsets {
    /// Whether offsets are kept: a reader of a book that keeps nothing need not read them.
    pub(crate) fn keeping(&self) -> bool {
        self.0.is_some()
    }

    pub(crate) fn record(&self, sequence: i64, offset: String) {
        if let Some(page) = &self.0 {
            page.lock().insert(sequence, offset);
        }
    }
}

impl OffsetBook {
    /// A book for the Blob store, which takes an offset with each checkpoint.
    pub(crate) fn keeping() -> Self {
        OffsetBook(Some(Arc::default()))
    }

    /// A book that keeps nothing, for stores that never ask for an offset.
    pub(crate) fn off() -> Self {
        OffsetBook(None)
    }

    fn key(group: &str, hub: &str, partition: &str) -> BookKey {
        (group.to_string(), hub.to_string(), partition.to_string())
    }

    pub(crate) fn record(
        &self,
        group: &str,
        hub: &str,
        partition: &str,
        sequence: i64,
        offset: String,
    ) {
        let Some(book) = &self.0 else { return };
        let page = book
            .lock()
            .entry(Self::key(group, hub, partition))
            .or_default()
            .clone();
        page.lock().insert(sequence, offset);
    }

    /// A fresh page for a partition's new reader; what an earlier reader recorded (and may
    /// still record) is forgotten.
    pub(crate) fn open(&self, group: &str, hub: &str, partition: &str) -> PartitionOffsets {
        PartitionOffsets(self.0.as_ref().map(|book| {
            let page = Page::default();
            book.lock()
                .insert(Self::key(group, hub, partition), page.clone());
            page
        }))
    }

    /// The offset of `sequence`, forgetting it and everything before.
    pub(crate) fn take(
        &self,
        group: &str,
        hub: &str,
        partition: &str,
        sequence: i64,
    ) -> Option<String> {
        let page = self
            .0
            .as_ref()?
            .lock()
            .get(&Self::key(group, hub, partition))?
            .clone();
        let mut entries = page.lock();
        let offset = entries.get(&sequence).cloned();
        *entries = entries.split_off(&(sequence + 1));
        offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_book_hands_out_and_forgets() {
        let book = OffsetBook::keeping();
        for sequence in 0..5 {
            book.record("g", "hub", "0", sequence, format!("o{sequence}"));
        }
        book.record("other", "hub", "0", 2, "x2".into());
        assert_eq!(book.take("g", "hub", "0", 2).as_deref(), Some("o2"));
        assert_eq!(
            book.take("g", "hub", "0", 1),
            None,
            "forgotten with everything before 2"
        );
        assert_eq!(book.take("g", "hub", "0", 4).as_deref(), Some("o4"));
        assert_eq!(book.take("g", "hub", "1", 0), None);
        assert_eq!(
            book.take("other", "hub", "0", 2).as_deref(),
            Some("x2"),
            "groups apart"
        );
    }
}

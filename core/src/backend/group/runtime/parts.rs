//! The runtime's owned partitions: in partition order (balance and delivery walk them so), and
//! findable by generation, which is what every ack carries.
//!
//! A sorted vector rather than a `BTreeMap`: an ack finds its partition with one hash probe of
//! the generation to its index, where the map cost a probe to the id and then a search down the
//! tree comparing ids as strings (137 instructions per ack at batch 100 on memory://). The
//! index is rebuilt when a partition is taken on or dropped, which happens per balance round,
//! not per event.

use super::{Part, SeqHash};
use crate::PartitionId;
use std::collections::HashMap;

#[derive(Default)]
pub(in crate::backend::group) struct Parts {
    /// Sorted by id.
    items: Vec<(PartitionId, Part)>,
    /// Each partition's index in `items` by its generation.
    by_generation: HashMap<u64, usize, SeqHash>,
}

impl Parts {
    fn reindex(&mut self) {
        self.by_generation.clear();
        for (i, (_, part)) in self.items.iter().enumerate() {
            self.by_generation.insert(part.generation, i);
        }
    }

    /// Adds or replaces `id`'s partition.
    pub(in crate::backend::group) fn insert(&mut self, id: PartitionId, part: Part) {
        match self.items.binary_search_by(|(k, _)| k.cmp(&id)) {
            Ok(i) => self.items[i].1 = part,
            Err(i) => self.items.insert(i, (id, part)),
        }
        self.reindex();
    }

    /// Takes `id`'s partition out.
    pub(in crate::backend::group) fn remove(&mut self, id: &PartitionId) -> Option<Part> {
        let i = self.items.binary_search_by(|(k, _)| k.cmp(id)).ok()?;
        let (_, part) = self.items.remove(i);
        self.reindex();
        Some(part)
    }

    pub(in crate::backend::group) fn get(&self, id: &PartitionId) -> Option<&Part> {
        let i = self.items.binary_search_by(|(k, _)| k.cmp(id)).ok()?;
        Some(&self.items[i].1)
    }

    pub(in crate::backend::group) fn get_mut(&mut self, id: &PartitionId) -> Option<&mut Part> {
        let i = self.items.binary_search_by(|(k, _)| k.cmp(id)).ok()?;
        Some(&mut self.items[i].1)
    }

    /// The partition owned under `generation`, if it still is.
    #[inline]
    pub(in crate::backend::group) fn by_generation_mut(
        &mut self,
        generation: u64,
    ) -> Option<&mut Part> {
        let i = *self.by_generation.get(&generation)?;
        self.items
            .get_mut(i)
            .map(|(_, p)| p)
            .filter(|p| p.generation == generation)
    }

    pub(in crate::backend::group) fn iter(
        &self,
    ) -> impl DoubleEndedIterator<Item = (&PartitionId, &Part)> {
        self.items.iter().map(|(k, v)| (k, v))
    }

    pub(in crate::backend::group) fn iter_mut(
        &mut self,
    ) -> impl DoubleEndedIterator<Item = (&PartitionId, &mut Part)> {
        self.items.iter_mut().map(|(k, v)| (&*k, v))
    }

    pub(in crate::backend::group) fn keys(&self) -> impl DoubleEndedIterator<Item = &PartitionId> {
        self.items.iter().map(|(k, _)| k)
    }

    pub(in crate::backend::group) fn values(&self) -> impl DoubleEndedIterator<Item = &Part> {
        self.items.iter().map(|(_, v)| v)
    }

    pub(in crate::backend::group) fn values_mut(
        &mut self,
    ) -> impl DoubleEndedIterator<Item = &mut Part> {
        self.items.iter_mut().map(|(_, v)| v)
    }

    #[cfg(test)]
    pub(in crate::backend::group) fn into_values(self) -> impl Iterator<Item = Part> {
        self.items.into_iter().map(|(_, v)| v)
    }
}

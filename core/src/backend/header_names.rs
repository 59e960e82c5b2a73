//! Header names a consumer's events share instead of copying each.

use std::sync::{Mutex, PoisonError};

/// Header names an event can carry without a copy of its own. The names a consumer sees recur
/// on every event (a trace id, a content type), so each distinct one is copied once for the
/// life of the process and events name it as a `&'static str`
/// ([`Headers::append_static`](crate::Headers::append_static)): no allocation, UTF-8 check or
/// free per header, and nothing for the application's thread to free that a receive task
/// allocated. Bounded: the process keeps at most 256 names of at most
/// [`MAX_NAME_LEN`](HeaderNames::MAX_NAME_LEN) bytes (16 KiB), for all backends together; any
/// other name is copied per event. Each decoder remembers the names it met (at most 32), so
/// the process-wide list is only locked when a decoder meets a name for the first time.
///
/// ```
/// use tributary::backend::HeaderNames;
/// let mut names = HeaderNames::new();
/// let first = names.get(b"trace-id").unwrap();
/// assert!(std::ptr::eq(first, HeaderNames::new().get(b"trace-id").unwrap()));
/// ```
#[derive(Debug, Default)]
pub struct HeaderNames {
    seen: Vec<&'static str>,
}

/// Every name kept, process-wide.
static KEPT: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
const MAX_NAMES: usize = 256;
const MAX_NAMES_SEEN: usize = 32;

impl HeaderNames {
    /// The longest name kept; longer ones are copied per event.
    pub const MAX_NAME_LEN: usize = 64;

    /// A decoder's list, empty.
    pub fn new() -> HeaderNames {
        HeaderNames { seen: Vec::new() }
    }

    /// The kept copy of `name`, or `None` when it is not kept (too long, too many names, or
    /// not UTF-8): the caller then copies it.
    pub fn get(&mut self, name: &[u8]) -> Option<&'static str> {
        if let Some(&kept) = self.seen.iter().find(|n| n.as_bytes() == name) {
            return Some(kept);
        }
        if name.len() > Self::MAX_NAME_LEN || self.seen.len() >= MAX_NAMES_SEEN {
            return None;
        }
        let name = std::str::from_utf8(name).ok()?;
        let mut kept = KEPT.lock().unwrap_or_else(PoisonError::into_inner);
        let found = match kept.iter().find(|n| **n == name) {
            Some(&found) => found,
            None if kept.len() < MAX_NAMES => {
                let found: &'static str = Box::leak(name.into());
                kept.push(found);
                found
            }
            None => return None,
        };
        self.seen.push(found);
        Some(found)
    }
}

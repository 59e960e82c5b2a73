//! Backends by URL, shared by the routes that name the same URL.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tributary::{Backend, Result};

/// Each URL connected once. A route whose sink or source fails to open has that URL connected
/// afresh when it reopens: a client can be stuck in a state only a new connection clears.
pub(super) struct Connections {
    by_url: tokio::sync::Mutex<HashMap<String, Arc<dyn Backend>>>,
    /// Every backend ever connected, closed at shutdown.
    pub(super) all: parking_lot::Mutex<Vec<Arc<dyn Backend>>>,
    /// URLs more than one route names: never reconnected, because the other routes keep
    /// using the old backend, and two clients of one `file://` directory in one process would
    /// compete for its lock.
    shared: HashSet<String>,
}

impl Connections {
    /// Connections for routes naming `urls` (one entry per route and role).
    pub(super) fn new<'a>(urls: impl IntoIterator<Item = &'a str>) -> Connections {
        let mut seen = HashSet::new();
        let mut shared = HashSet::new();
        for url in urls {
            if !seen.insert(url) {
                shared.insert(url.to_owned());
            }
        }
        Connections {
            by_url: Default::default(),
            all: Default::default(),
            shared,
        }
    }

    pub(super) async fn get(&self, url: &str) -> Result<Arc<dyn Backend>> {
        let mut by_url = self.by_url.lock().await;
        if let Some(backend) = by_url.get(url) {
            return Ok(backend.clone());
        }
        let backend = tributary::connect(url).await?;
        by_url.insert(url.to_string(), backend.clone());
        self.all.lock().push(backend.clone());
        Ok(backend)
    }

    /// The next `get` of `url` connects again, and the old backend is closed once no route
    /// holds it. Not for a URL other routes name too (see `shared`), nor for `memory://`:
    /// there is nothing to reset, and closing a named instance closes it for every route.
    pub(super) async fn forget(&self, url: &str) {
        if self.shared.contains(url) || url.starts_with("memory:") {
            return;
        }
        let Some(backend) = self.by_url.lock().await.remove(url) else {
            return;
        };
        let unused = {
            let mut all = self.all.lock();
            // Held by `all` and by `backend` here, nothing else: no route uses it.
            if Arc::strong_count(&backend) == 2 {
                all.retain(|b| !Arc::ptr_eq(b, &backend));
                true
            } else {
                false
            }
        };
        if unused {
            let _ = backend.close().await;
        }
    }
}

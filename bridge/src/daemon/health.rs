//! What each route is doing, as `/healthz`, `/readyz` and the `route_up` gauge report it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

/// A route's state.
#[derive(Debug, Clone)]
pub enum RouteState {
    /// Connecting and opening its sinks and source, since then.
    Connecting(Instant),
    /// Open and replicating.
    Running,
    /// Its last attempt failed with this error; it tries again after a backoff.
    Failing(String),
}

/// What the operations endpoint reports.
#[derive(Debug)]
pub struct Health {
    /// Every route has opened its source and sink at least once.
    pub ready: AtomicBool,
    /// Shutting down: not ready any more.
    pub stopping: AtomicBool,
    /// Routes that have opened once, of `routes`.
    opened: AtomicUsize,
    routes: usize,
    /// Each route's state. A lock that does not poison: a panicked route must not take the
    /// health endpoint down with it.
    states: parking_lot::Mutex<HashMap<String, RouteState>>,
}

impl Health {
    /// Health of `routes`, every one connecting.
    pub fn new<'a>(routes: impl IntoIterator<Item = &'a str>) -> Health {
        let now = Instant::now();
        let states: HashMap<String, RouteState> = routes
            .into_iter()
            .map(|r| (r.to_owned(), RouteState::Connecting(now)))
            .collect();
        Health {
            ready: AtomicBool::new(states.is_empty()),
            stopping: AtomicBool::new(false),
            opened: AtomicUsize::new(0),
            routes: states.len(),
            states: parking_lot::Mutex::new(states),
        }
    }

    /// Records a route's state; the first time a route runs counts towards readiness.
    pub fn set(&self, route: &str, state: RouteState) {
        crate::metrics::ROUTE_UP
            .gauge(route)
            .set(if matches!(state, RouteState::Running) {
                1.0
            } else {
                0.0
            });
        let first_run = {
            let mut states = self.states.lock();
            let was_running_before = matches!(states.get(route), Some(RouteState::Running));
            let first = matches!(state, RouteState::Running) && !was_running_before;
            states.insert(route.to_owned(), state);
            first
        };
        if first_run && self.opened.fetch_add(1, Ordering::SeqCst) + 1 == self.routes {
            self.ready.store(true, Ordering::SeqCst);
        }
    }

    /// Routes whose last attempt failed, with the error.
    pub fn failing(&self) -> HashMap<String, String> {
        self.states
            .lock()
            .iter()
            .filter_map(|(route, state)| match state {
                RouteState::Failing(error) => Some((route.clone(), error.clone())),
                _ => None,
            })
            .collect()
    }

    /// `/healthz`: 200 and `ok` when every route runs; else 503 and a line per route that
    /// does not (`route a: connecting for 3s`, `route b: <its error>`).
    pub fn healthz(&self) -> (bool, String) {
        let states = self.states.lock();
        let mut lines: Vec<String> = states
            .iter()
            .filter_map(|(route, state)| match state {
                RouteState::Running => None,
                RouteState::Connecting(since) => Some(format!(
                    "route {route}: connecting for {}s\n",
                    since.elapsed().as_secs()
                )),
                RouteState::Failing(error) => Some(format!("route {route}: {error}\n")),
            })
            .collect();
        if lines.is_empty() {
            return (true, "ok\n".into());
        }
        lines.sort();
        (false, lines.concat())
    }

    /// `/readyz`: every route has opened once, and the daemon is not stopping.
    pub fn readyz(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.stopping.load(Ordering::SeqCst)
    }
}

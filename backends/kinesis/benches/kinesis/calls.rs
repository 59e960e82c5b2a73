//! Counts `PutRecords` calls and how long each was out, on both sides alike: the AWS SDK opens
//! one `Kinesis.PutRecords` span per operation (retries within it included), so a tracing
//! subscriber interested in that span alone sees every call of the raw loop and of
//! tributary's producer, without either being changed. Every other callsite is never
//! enabled, so the rest of the SDK's and tributary's tracing stays as cheap as with no
//! subscriber.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

const SPAN: &str = "Kinesis.PutRecords";

/// Calls so far, and their summed time out (from the span's creation to its close).
#[derive(Debug, Clone, Copy, Default)]
pub struct Calls {
    pub count: u64,
    pub busy_nanos: u64,
}

impl std::ops::Sub for Calls {
    type Output = Calls;
    fn sub(self, before: Calls) -> Calls {
        Calls {
            count: self.count - before.count,
            busy_nanos: self.busy_nanos - before.busy_nanos,
        }
    }
}

#[derive(Default)]
pub struct CallCounter {
    next: AtomicU64,
    count: AtomicU64,
    busy_nanos: AtomicU64,
    /// Open spans: when each opened, and its handles.
    open: Mutex<HashMap<u64, (Instant, usize)>>,
}

static COUNTER: std::sync::OnceLock<&'static CallCounter> = std::sync::OnceLock::new();

/// Installs the counter as the process's subscriber (once).
pub fn install() {
    let counter: &'static CallCounter = COUNTER.get_or_init(|| Box::leak(Box::default()));
    let _ = tracing::subscriber::set_global_default(Forward(counter));
}

/// The calls counted so far.
pub fn now() -> Calls {
    COUNTER.get().map_or_else(Calls::default, |c| Calls {
        count: c.count.load(Ordering::Relaxed),
        busy_nanos: c.busy_nanos.load(Ordering::Relaxed),
    })
}

struct Forward(&'static CallCounter);

impl Subscriber for Forward {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if metadata.is_span() && metadata.name() == SPAN {
            Interest::always()
        } else {
            Interest::never()
        }
    }
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_span() && metadata.name() == SPAN
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.0.open.lock().unwrap().insert(id, (Instant::now(), 1));
        self.0.count.fetch_add(1, Ordering::Relaxed);
        Id::from_u64(id)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
    fn clone_span(&self, id: &Id) -> Id {
        if let Some((_, handles)) = self.0.open.lock().unwrap().get_mut(&id.into_u64()) {
            *handles += 1;
        }
        id.clone()
    }
    fn try_close(&self, id: Id) -> bool {
        let mut open = self.0.open.lock().unwrap();
        let Some((opened, handles)) = open.get_mut(&id.into_u64()) else {
            return false;
        };
        *handles -= 1;
        if *handles > 0 {
            return false;
        }
        let nanos = opened.elapsed().as_nanos() as u64;
        open.remove(&id.into_u64());
        self.0.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
        true
    }
}

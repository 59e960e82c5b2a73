//! The close gate every producer needs: calls fail with `Closed` after `close`, and `close`
//! waits for the calls already in progress so none is cut off halfway.

use crate::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{RwLock, RwLockReadGuard};

/// Guards a producer (or anything with the same close rules) against use after close.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> tributary::Result<()> {
/// use tributary::backend::CloseGate;
/// let gate = CloseGate::new("producer for `orders`");
/// {
///     let _pass = gate.enter().await?; // a send runs while the pass is held
/// }
/// assert!(gate.close().await);        // first close: flush and release now
/// assert!(!gate.close().await);       // second close: nothing to do
/// assert_eq!(gate.enter().await.unwrap_err().kind(), tributary::ErrorKind::Closed);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct CloseGate {
    what: String,
    closed: AtomicBool,
    in_progress: RwLock<()>,
}

/// Held by a call in progress; `close` waits until every pass is dropped.
#[derive(Debug)]
pub struct GatePass<'a>(#[allow(dead_code)] RwLockReadGuard<'a, ()>);

impl CloseGate {
    /// A gate for `what` (named in the `Closed` error, e.g. "producer for `orders`").
    pub fn new(what: impl Into<String>) -> Self {
        CloseGate {
            what: what.into(),
            closed: AtomicBool::new(false),
            in_progress: RwLock::new(()),
        }
    }

    /// `Closed` once [`close`](CloseGate::close) has begun.
    pub fn check(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed(format!("{} is closed", self.what)));
        }
        Ok(())
    }

    /// Whether `close` has begun.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Enters a call: fails with `Closed` after close, else holds off `close` until the pass
    /// is dropped.
    pub async fn enter(&self) -> Result<GatePass<'_>> {
        self.check()?;
        let guard = self.in_progress.read().await;
        // A close that started while this call waited for the lock wins.
        self.check()?;
        Ok(GatePass(guard))
    }

    /// Closes the gate and waits for the calls in progress. Returns `true` to the first caller
    /// only, who then flushes and releases the resource; later calls return `false` at once
    /// (closing twice is harmless).
    pub async fn close(&self) -> bool {
        if self.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        drop(self.in_progress.write().await);
        true
    }
}

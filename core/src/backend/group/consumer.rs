//! A member of a group runtime, as a [`Consumer`].

use super::runtime::{Deliveries, Runtime};
use crate::{Consumer, Delivery, Error, Result};
use async_trait::async_trait;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// A consumer in a group run by the [`GroupEngine`](super::GroupEngine).
pub struct GroupConsumer {
    runtime: Arc<Runtime>,
    member: u64,
    closed: AtomicBool,
    closed_tx: watch::Sender<bool>,
    rotate: AtomicUsize,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("stream", &self.runtime.stream)
            .field("group", &self.runtime.group)
            .field("owner", &self.runtime.owner)
            .field("member", &self.member)
            .finish()
    }
}

impl GroupConsumer {
    pub(super) fn new(runtime: Arc<Runtime>, member: u64) -> Self {
        GroupConsumer {
            runtime,
            member,
            closed: AtomicBool::new(false),
            closed_tx: watch::channel(false).0,
            rotate: AtomicUsize::new(0),
        }
    }

    /// The lease owner id of this consumer's runtime (shared by the consumers of one group
    /// that one backend instance opened).
    pub fn owner(&self) -> &str {
        &self.runtime.owner
    }

    fn closed_error(&self) -> Error {
        Error::closed(format!(
            "consumer of group `{}` on stream `{}` is closed",
            self.runtime.group, self.runtime.stream
        ))
    }

    /// One look at the state, taking into `out`: whether `take` is done with `out` (full, or
    /// something in hand with no linger), or the error to return.
    fn look<O: Deliveries>(&self, max: usize, linger: Duration, out: &mut O) -> Result<bool> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        let rotate = self.rotate.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.runtime.take(self.member, max - out.len(), rotate, out) {
            if out.len() == 0 {
                return Err(e);
            }
            // Hand out what is in hand; the error comes back on the next call.
            return Ok(true);
        }
        Ok(out.len() >= max || (out.len() > 0 && linger.is_zero()))
    }

    /// Waits for the first delivery, then gathers more into `out` for up to `linger`, `max` at
    /// most (no more than `out` holds).
    async fn take<O: Deliveries + Send>(
        &self,
        max: usize,
        linger: Duration,
        mut out: O,
    ) -> Result<O> {
        // A ready delivery is taken with one look (one lock), neither counting this member as
        // receiving nor subscribing to changes: nothing waits, so no wake-up can be missed, and
        // nothing is awaited, so a dropped future cannot have taken anything.
        if self.look(max, linger, &mut out)? {
            return Ok(out);
        }
        // It must wait: count as receiving and subscribe *before* looking again, so a change
        // after that look both sends (see `Runtime::anyone_receiving`) and is seen here.
        let _receiving = self.runtime.receiving();
        let mut changed = self.runtime.changed.subscribe();
        let mut closed = self.closed_tx.subscribe();
        let mut deadline = None;
        loop {
            if out.len() > 0 && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + linger);
            }
            changed.borrow_and_update();
            if self.look(max, linger, &mut out)? {
                return Ok(out);
            }
            if out.len() > 0 && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + linger);
            }
            let lingering = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = changed.changed() => {}
                _ = closed.changed() => {}
                _ = lingering => return Ok(out),
            }
        }
    }
}

#[async_trait]
impl Consumer for GroupConsumer {
    async fn receive(&self) -> Result<Delivery> {
        let one = self.take(1, Duration::ZERO, None).await?;
        Ok(one.expect("take returns at least one delivery"))
    }

    fn try_receive(&self) -> Option<Result<Delivery>> {
        let mut one = None;
        match self.look(1, Duration::ZERO, &mut one) {
            Ok(_) => one.map(Ok),
            Err(e) => Some(Err(e)),
        }
    }

    async fn receive_batch(&self, max: usize, linger: Duration) -> Result<Vec<Delivery>> {
        let max = max.max(1);
        // Sized once: growing it by doubling copied each delivery about twice at 1000.
        self.take(max, linger, Vec::with_capacity(max.min(1024)))
            .await
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.closed_tx.send_replace(true);
        self.runtime.leave(self.member);
        if self.runtime.is_stopping() {
            // The last member: the runtime commits and releases every lease.
            self.runtime.stopped().await;
            Ok(())
        } else {
            self.runtime.commit().await
        }
    }

    async fn commit(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        self.runtime.commit().await
    }

    fn lag(&self) -> Option<u64> {
        self.runtime.lag(self.member)
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            // The coordinator task commits and releases when the last member leaves; a process
            // that exits first leaves leases that others on this host may take at once.
            self.runtime.leave(self.member);
        }
    }
}

// TRIBUTARY PATCH (vendor/README.md): a cancel-safe stop for a receiver's stream.

use futures::task::AtomicWaker;
use std::{
    fmt,
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::Poll,
};

/// Ends the event streams of the receivers it is given to ([`EventReceiver::with_stop`]),
/// without cutting an attach or a recovery short.
///
/// A stream's `next()` runs the link's attach and the SDK's recoveries inside the same future
/// as the wait for an event, and dropping it during either can leave the connection's state
/// broken. A stop is acted on only where the stream waits for a delivery on an attached link
/// (the point a `receive_timeout` cuts): a stream waiting there ends at once, one attaching or
/// recovering ends when it gets there. The stream then ends (`None`) instead of yielding an
/// error. Without a stop there is no per-call timer, unlike `receive_timeout`.
///
/// Meant for one stream at a time (the receivers of one partition, one after the other): a
/// stop wakes the stream that waited last.
///
/// [`EventReceiver::with_stop`]: crate::EventReceiver::with_stop
#[derive(Clone, Default)]
pub struct ReceiveStop {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    stopped: AtomicBool,
    waiting: AtomicBool,
    waker: AtomicWaker,
}

impl ReceiveStop {
    /// A stop not yet given.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends the streams of the receivers given this stop: at once if one waits for an event,
    /// else when its attach or recovery gets to that wait. It stays given.
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::Release);
        self.inner.waker.wake();
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::Acquire)
    }

    /// Whether a stream is waiting for an event on an attached link, which a stop ends at
    /// once: `false` while it attaches, authorizes or recovers (or is not being polled).
    pub fn is_waiting(&self) -> bool {
        self.inner.waiting.load(Ordering::Acquire)
    }

    /// Awaits `receive` (the attached link's wait for a delivery, which is cancel-safe), or
    /// `None` once stopped. A delivery ready at the first poll costs no more than the poll.
    pub(crate) async fn receive<F: Future>(&self, receive: F) -> Option<F::Output> {
        let mut receive = std::pin::pin!(receive);
        let waiting = Waiting(&self.inner);
        futures::future::poll_fn(|cx| {
            if let Poll::Ready(output) = receive.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            self.inner.waker.register(cx.waker());
            // After the registration: a stop given before it is seen here, one given after it
            // wakes this task.
            if self.inner.stopped.load(Ordering::Acquire) {
                return Poll::Ready(None);
            }
            waiting.set(true);
            Poll::Pending
        })
        .await
    }
}

/// Clears the waiting flag when the wait ends or is dropped.
struct Waiting<'a>(&'a Inner);

impl Waiting<'_> {
    fn set(&self, waiting: bool) {
        // Only a change is written, not a store per poll.
        if self.0.waiting.load(Ordering::Relaxed) != waiting {
            self.0.waiting.store(waiting, Ordering::Release);
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.set(false);
    }
}

impl fmt::Debug for ReceiveStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiveStop")
            .field("stopped", &self.is_stopped())
            .field("waiting", &self.is_waiting())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_ends_a_pending_wait_and_clears_waiting() {
        let stop = ReceiveStop::new();
        let waiter = {
            let stop = stop.clone();
            tokio::spawn(async move { stop.receive(std::future::pending::<()>()).await })
        };
        while !stop.is_waiting() {
            tokio::task::yield_now().await;
        }
        stop.stop();
        assert_eq!(waiter.await.unwrap(), None);
        assert!(!stop.is_waiting());
    }

    #[tokio::test]
    async fn a_ready_delivery_is_returned_even_when_stopped() {
        let stop = ReceiveStop::new();
        stop.stop();
        assert_eq!(stop.receive(async { 7 }).await, Some(7));
        assert_eq!(stop.receive(std::future::pending::<()>()).await, None);
    }
}

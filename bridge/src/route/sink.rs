//! Writing a batch to the sink: retried, then event by event so one poison event cannot hold
//! back the others; and the producers of the extra streams a transform routes to.

use std::sync::Arc;

use tributary::{Backend, Error, Event, Result};

use super::Running;
use super::dead_letter::send_to_dead_letter;
use super::retry::send_with_retries;

/// Writes a batch to the sink stream `stream`. When the batch as a whole keeps failing, its
/// events are sent one by one, in order, so that one poison event cannot hold back the others:
/// an event the sink still refuses goes to the dead-letter sink with the reason, or, without
/// one, the write fails and the route stops with the batch unacked.
pub(super) async fn write(
    route: &Running<'_>,
    producer: &dyn tributary::Producer,
    dead_letter: Option<&(Box<dyn tributary::Producer>, String)>,
    events: Vec<Event>,
    stream: &str,
) -> Result<()> {
    let cancel = route.cancel;
    let (error, attempts) = match send_with_retries(route, producer, &events).await {
        Ok(()) => return Ok(()),
        Err(failure) => failure,
    };
    if cancel.is_cancelled() || events.len() == 1 && dead_letter.is_none() {
        return Err(error);
    }
    tracing::warn!(route = %route.spec.name, error = %error, attempts, events = events.len(), "batch refused; sending its events one by one");
    for event in events {
        let one = std::slice::from_ref(&event);
        let Err((error, attempts)) = send_with_retries(route, producer, one).await else {
            continue;
        };
        let Some(dlq) = dead_letter else {
            return Err(error);
        };
        if cancel.is_cancelled() {
            return Err(error);
        }
        send_to_dead_letter(route, dlq, event, &error, attempts, stream).await?;
    }
    Ok(())
}

/// Producers for the sink streams a transform chose, beyond the route's own: opened on first
/// use, and bounded, because a `stream` expression could name any number of streams.
#[derive(Default)]
pub(super) struct OtherSinks {
    /// Least recently used first.
    open: Vec<(String, Box<dyn tributary::Producer>)>,
}

impl OtherSinks {
    const MAX_OPEN: usize = 64;

    pub(super) async fn get(
        &mut self,
        sink: &Arc<dyn Backend>,
        stream: &str,
    ) -> Result<&dyn tributary::Producer> {
        if let Some(i) = self.open.iter().position(|(s, _)| s == stream) {
            let entry = self.open.remove(i);
            self.open.push(entry);
        } else {
            if self.open.len() >= Self::MAX_OPEN {
                let (_, oldest) = self.open.remove(0);
                let _ = oldest.close().await;
            }
            let producer = sink.producer(stream).await?;
            self.open.push((stream.to_string(), producer));
        }
        match self.open.last() {
            Some((_, producer)) => Ok(producer.as_ref()),
            None => Err(Error::other("no producer was opened")),
        }
    }

    pub(super) async fn close(self) {
        for (_, producer) in self.open {
            let _ = producer.close().await;
        }
    }
}

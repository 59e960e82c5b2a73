//! Consumer links (the client receives): a partition read from the selector's start position,
//! events sent as link credit allows, owner-level (epoch) receivers displacing others.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fe2o3_amqp::Sendable;
use fe2o3_amqp::link::Sender;
use fe2o3_amqp::types::definitions::{AmqpError, LinkError};
use fe2o3_amqp::types::messaging::MessageAnnotations;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::primitives::{OrderedMap, Symbol, Timestamp, Value};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::connection::ConnState;
use super::{Shared, error, not_found, refuse_sender};
use crate::auth::path_segments;
use crate::filter::{StartAt, parse_selector};
use crate::store::{AmqpMessage, Detach, Event};

const SELECTOR_FILTER: &str = "apache.org:selector-filter:string";
const EPOCH_PROPERTY: &str = "com.microsoft:epoch";
/// Events handed to a consumer link per read of the partition.
const READ_CHUNK: usize = 128;
/// What one wait for link credit ended with.
enum Step {
    Sent,
    Ended(Result<Detach, oneshot::error::RecvError>),
    Failed,
    Idle,
}

/// How often a consumer blocked on link credit checks whether the client detached meanwhile.
const CREDIT_RECHECK: Duration = Duration::from_millis(250);

/// `<hub>/ConsumerGroups/<group>/Partitions/<n>`.
pub(super) fn consumer_source<'a>(segments: &[&'a str]) -> Option<(&'a str, &'a str, &'a str)> {
    match segments {
        [hub, cg, group, p, id]
            if cg.eq_ignore_ascii_case("ConsumerGroups")
                && p.eq_ignore_ascii_case("Partitions") =>
        {
            Some((hub, group, id))
        }
        _ => None,
    }
}

fn start_position(sender: &Sender) -> Result<StartAt, String> {
    let Some(filter) = sender.source().as_ref().and_then(|s| s.filter.as_ref()) else {
        return Ok(StartAt::Latest);
    };
    let Some(value) = filter.get(&Symbol::from(SELECTOR_FILTER)) else {
        return Ok(StartAt::Latest);
    };
    let expression = match value {
        Value::Described(described) => match &described.value {
            Value::String(s) => s,
            other => {
                return Err(format!(
                    "selector filter value must be a string, not {other:?}"
                ));
            }
        },
        Value::String(s) => s,
        other => {
            return Err(format!(
                "selector filter must be a described string, not {other:?}"
            ));
        }
    };
    parse_selector(expression)
}

fn epoch(sender: &Sender) -> Result<Option<i64>, String> {
    let value = sender.properties(|p| {
        p.as_ref()
            .and_then(|fields| fields.get(&Symbol::from(EPOCH_PROPERTY)))
            .cloned()
    });
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Long(v)) => Ok(Some(v)),
        Some(Value::Int(v)) => Ok(Some(v.into())),
        Some(Value::Short(v)) => Ok(Some(v.into())),
        Some(Value::Uint(v)) => Ok(Some(v.into())),
        Some(Value::Ulong(v)) => i64::try_from(v)
            .map(Some)
            .map_err(|_| format!("epoch {v} too large")),
        Some(other) => Err(format!("{EPOCH_PROPERTY} must be a long, not {other:?}")),
    }
}

fn annotate(event: &Event) -> AmqpMessage {
    let mut message = event.message.clone();
    let annotations = message
        .message_annotations
        .get_or_insert_with(|| MessageAnnotations(OrderedMap::new()));
    let mut put = |key: &str, value: Value| {
        annotations
            .0
            .insert(OwnedKey::Symbol(Symbol::from(key)), value);
    };
    put("x-opt-sequence-number", Value::Long(event.sequence));
    put("x-opt-offset", Value::String(event.offset.to_string()));
    put(
        "x-opt-enqueued-time",
        Value::Timestamp(Timestamp::from_milliseconds(event.enqueued_ms)),
    );
    if let Some(key) = &event.partition_key {
        put("x-opt-partition-key", Value::String(key.clone()));
    }
    message
}

/// Closes a consumer link for `detach`'s reason, with its condition.
async fn end(sender: Sender, detach: Result<Detach, oneshot::error::RecvError>) {
    let e = match detach {
        Ok(Detach::Forced(reason)) => error(LinkError::DetachForced, reason),
        Ok(Detach::Stolen(reason)) => error(LinkError::Stolen, reason),
        Err(_) => error(LinkError::Stolen, "receiver displaced"),
    };
    refuse_sender(sender, e).await
}

pub(super) async fn consumer(
    mut sender: Sender,
    address: &str,
    shared: Arc<Shared>,
    conn: Arc<ConnState>,
) {
    let segments = path_segments(address);
    let Some((hub_name, group, partition_id)) = consumer_source(&segments) else {
        let e = error(
            AmqpError::NotFound,
            format!("'{address}' is not a consumer group partition address"),
        );
        return refuse_sender(sender, e).await;
    };
    if !conn.authorized(&shared, address) {
        let e = error(
            AmqpError::UnauthorizedAccess,
            format!("no valid token for '{address}' (send a CBS put-token first)"),
        );
        return refuse_sender(sender, e).await;
    }
    let partition = match shared
        .namespace
        .hub(hub_name)
        .and_then(|hub| shared.namespace.check_group(&hub, group).map(|_| hub))
        .and_then(|hub| hub.partition(partition_id))
    {
        Ok(p) => p,
        Err(e) => return refuse_sender(sender, not_found(e)).await,
    };
    let start = match start_position(&sender) {
        Ok(start) => start,
        Err(e) => return refuse_sender(sender, error(AmqpError::InvalidField, e)).await,
    };
    let epoch = match epoch(&sender) {
        Ok(epoch) => epoch,
        Err(e) => return refuse_sender(sender, error(AmqpError::InvalidField, e)).await,
    };
    let link_id = shared.next_link.fetch_add(1, Ordering::Relaxed);
    let mut claim = match partition.claim(group, epoch, link_id) {
        Ok(claim) => claim,
        Err(e) => return refuse_sender(sender, error(LinkError::Stolen, e)).await,
    };
    let mut tail = partition.subscribe();
    let mut next = partition.resolve(&start);
    tracing::debug!(
        link = sender.name(),
        hub = hub_name,
        group,
        partition = partition_id,
        ?start,
        next,
        ?epoch,
        "consumer attached"
    );
    // One recheck deadline for the link's life, not a timer per event: it is re-armed only
    // when it fires, and looks for a detach only if no send completed in the period before,
    // so the look happens after between one and two periods without credit.
    let mut recheck = std::pin::pin!(tokio::time::sleep(CREDIT_RECHECK));
    let mut progressed = false;
    loop {
        // Mark the current tail as seen before reading, so an append after the read wakes us.
        tail.borrow_and_update();
        let events = partition.read(next, READ_CHUNK);
        if events.is_empty() {
            tokio::select! {
                // Time spent waiting for events is not time without credit.
                changed = tail.changed() => if changed.is_err() { return } else { progressed = true },
                detach = &mut claim.ended => return end(sender, detach).await,
                _ = sender.on_detach() => return,
            }
            continue;
        }
        for event in events {
            let sendable = Sendable::builder()
                .message(annotate(&event))
                .settled(true)
                .build();
            // Sending waits for link credit, which bounds what is in flight per consumer.
            loop {
                let step = {
                    let send = sender.send_batchable_ref(&sendable);
                    let mut send = std::pin::pin!(send);
                    loop {
                        tokio::select! {
                            biased;
                            detach = &mut claim.ended => break Step::Ended(detach),
                            sent = &mut send => break match sent {
                                Ok(_outcome) => Step::Sent,
                                Err(e) => {
                                    tracing::debug!(error = %e, "consumer link ended");
                                    Step::Failed
                                }
                            },
                            () = &mut recheck => {
                                recheck.as_mut().reset(Instant::now() + CREDIT_RECHECK);
                                if std::mem::take(&mut progressed) {
                                    continue;
                                }
                                break Step::Idle;
                            }
                        }
                    }
                };
                match step {
                    Step::Sent => {
                        progressed = true;
                        break;
                    }
                    Step::Ended(detach) => return end(sender, detach).await,
                    Step::Failed => return,
                    Step::Idle => {
                        // Out of credit for a while: the client may be detaching, and its
                        // detach is only seen when we look for it.
                        if tokio::time::timeout(Duration::from_millis(20), sender.on_detach())
                            .await
                            .is_ok()
                        {
                            return;
                        }
                    }
                }
            }
            next = event.sequence + 1;
        }
    }
}

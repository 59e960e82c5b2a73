//! The lease item: the KCL 2.x lease schema, attribute by attribute, and how tributary's
//! checkpoints map onto it.
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `leaseKey` | S (hash key) | the shard id |
//! | `leaseOwner` | S | the worker holding the lease; absent when nobody does |
//! | `leaseCounter` | N | bumped by every take, renewal, checkpoint and release: the fencing token, and how other workers tell a live lease from a dead one |
//! | `ownerSwitchesSinceCheckpoint` | N | how often the lease changed hands since the last checkpoint |
//! | `checkpoint` | S | a sequence number, or `TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP`, `SHARD_END` |
//! | `checkpointSubSequenceNumber` | N | the user record within an aggregated record (0 for plain records) |
//! | `pendingCheckpoint`, `pendingCheckpointSubSequenceNumber` | S, N | the KCL's two-phase checkpoints; tributary removes them when it checkpoints |
//! | `parentShardId` | SS | the shards this one was split or merged from |
//!
//! tributary adds three attributes of its own, which KCL workers ignore:
//! `tributaryLeaseMillis` (N, the lease duration its owner uses, so other tributary workers
//! time out a lease as its owner meant), `tributaryStream` (S, the stream, so one table is never
//! read for two streams by mistake) and `tributaryStart` (S, the exact start a group was pinned
//! at when it has no KCL form: `AT_TIMESTAMP` with its time, or a position).
//!
//! Checkpoints:
//!
//! | tributary | `checkpoint` | `checkpointSubSequenceNumber` |
//! |---|---|---|
//! | `Start(Earliest)` | `TRIM_HORIZON` | 0 |
//! | `Start(Latest)` | `LATEST` | 0 |
//! | `Start(Timestamp(t))` | `AT_TIMESTAMP` (+ `tributaryStart` = `t:MILLIS`) | 0 |
//! | `Start(Position(S or S:i))` | `S` (+ `tributaryStart` = `p:POSITION`) | `i - 1` (−1 for `S`): "everything before" |
//! | `Processed(S)` | `S` | 0 |
//! | `Processed(S:i)` (user record `i` of an aggregated record) | `S` | `i` |
//! | `Ended` | `SHARD_END` | 0 |
//!
//! `Processed(S)` and `Processed(S:0)` are the same checkpoint (user record 0 of record `S`, or
//! the plain record `S`) and read back as `Processed(S)`. A KCL item at `AT_TIMESTAMP` carries
//! no time (the KCL keeps it in its configuration), so it reads as no checkpoint: the group's
//! own start applies.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use tributary::backend::Checkpoint;
use tributary::{Position, StartPosition, Timestamp};

pub(crate) const LEASE_KEY: &str = "leaseKey";
pub(crate) const LEASE_OWNER: &str = "leaseOwner";
pub(crate) const LEASE_COUNTER: &str = "leaseCounter";
pub(crate) const OWNER_SWITCHES: &str = "ownerSwitchesSinceCheckpoint";
pub(crate) const CHECKPOINT: &str = "checkpoint";
pub(crate) const CHECKPOINT_SUB: &str = "checkpointSubSequenceNumber";
pub(crate) const PENDING_CHECKPOINT: &str = "pendingCheckpoint";
pub(crate) const PENDING_CHECKPOINT_SUB: &str = "pendingCheckpointSubSequenceNumber";
pub(crate) const PARENT_SHARD_ID: &str = "parentShardId";
pub(crate) const LEASE_MILLIS: &str = "tributaryLeaseMillis";
pub(crate) const STREAM: &str = "tributaryStream";
pub(crate) const START: &str = "tributaryStart";

pub(crate) const TRIM_HORIZON: &str = "TRIM_HORIZON";
pub(crate) const LATEST: &str = "LATEST";
pub(crate) const AT_TIMESTAMP: &str = "AT_TIMESTAMP";
pub(crate) const SHARD_END: &str = "SHARD_END";

/// A checkpoint as the values of `checkpoint`, `checkpointSubSequenceNumber` and
/// `tributaryStart` (`None`: remove it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub checkpoint: String,
    pub sub_sequence: i64,
    pub start: Option<String>,
}

/// Splits a position into sequence number and sub-sequence: `S:i` → (`S`, `i`), `S` → (`S`, 0).
fn split(position: &Position) -> (String, i64) {
    let text = position.as_str();
    if let Some((sequence, sub)) = text.rsplit_once(':')
        && let Ok(sub) = sub.parse::<i64>()
        && sub >= 0
        && !sequence.is_empty()
    {
        return (sequence.to_owned(), sub);
    }
    (text.to_owned(), 0)
}

fn join(sequence: &str, sub: i64) -> Position {
    if sub > 0 {
        Position::new(format!("{sequence}:{sub}"))
    } else {
        Position::new(sequence)
    }
}

/// `None` for a kind of checkpoint this version does not know (core's enum is open).
pub(crate) fn to_stored(checkpoint: &Checkpoint) -> Option<Stored> {
    let plain = |checkpoint: &str| Stored {
        checkpoint: checkpoint.to_owned(),
        sub_sequence: 0,
        start: None,
    };
    Some(match checkpoint {
        Checkpoint::Start(StartPosition::Earliest) => plain(TRIM_HORIZON),
        Checkpoint::Start(StartPosition::Latest) => plain(LATEST),
        Checkpoint::Start(StartPosition::Timestamp(t)) => Stored {
            checkpoint: AT_TIMESTAMP.to_owned(),
            sub_sequence: 0,
            start: Some(format!("t:{}", t.as_millis())),
        },
        Checkpoint::Start(StartPosition::Position(p)) => {
            let (sequence, sub) = split(p);
            Stored {
                checkpoint: sequence,
                sub_sequence: sub - 1,
                start: Some(format!("p:{p}")),
            }
        }
        Checkpoint::Processed(p) => {
            let (sequence, sub) = split(p);
            Stored {
                checkpoint: sequence,
                sub_sequence: sub,
                start: None,
            }
        }
        Checkpoint::Ended => plain(SHARD_END),
        _ => return None,
    })
}

/// The checkpoint an item holds, if any.
pub(crate) fn from_item(item: &HashMap<String, AttributeValue>) -> Option<Checkpoint> {
    let checkpoint = string(item, CHECKPOINT)?;
    let sub = number(item, CHECKPOINT_SUB).unwrap_or(0);
    let start = string(item, START);
    match checkpoint {
        TRIM_HORIZON => Some(Checkpoint::Start(StartPosition::Earliest)),
        LATEST => Some(Checkpoint::Start(StartPosition::Latest)),
        SHARD_END => Some(Checkpoint::Ended),
        AT_TIMESTAMP => start
            .and_then(|s| s.strip_prefix("t:"))
            .and_then(|ms| ms.parse::<i64>().ok())
            .map(|ms| Checkpoint::Start(StartPosition::Timestamp(Timestamp::from_millis(ms)))),
        sequence => match start.and_then(|s| s.strip_prefix("p:")) {
            Some(position) => Some(Checkpoint::Start(StartPosition::Position(Position::new(
                position,
            )))),
            None if sub < 0 => Some(Checkpoint::Start(StartPosition::Position(Position::new(
                sequence,
            )))),
            None => Some(Checkpoint::Processed(join(sequence, sub))),
        },
    }
}

pub(crate) fn string<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s.as_str()),
        _ => None,
    }
}

pub(crate) fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(stored: &Stored) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::from([
            (CHECKPOINT.to_owned(), s(&stored.checkpoint)),
            (CHECKPOINT_SUB.to_owned(), n(stored.sub_sequence)),
        ]);
        if let Some(start) = &stored.start {
            item.insert(START.to_owned(), s(start));
        }
        item
    }

    #[test]
    fn every_checkpoint_round_trips() {
        let seq = "49590338271490256608559692538361571095921575989136588898";
        for checkpoint in [
            Checkpoint::Start(StartPosition::Earliest),
            Checkpoint::Start(StartPosition::Latest),
            Checkpoint::Start(StartPosition::Timestamp(Timestamp::from_millis(
                1_700_000_000_123,
            ))),
            Checkpoint::Start(StartPosition::Position(Position::new(seq))),
            Checkpoint::Start(StartPosition::Position(Position::new(format!("{seq}:3")))),
            Checkpoint::Processed(Position::new(seq)),
            Checkpoint::Processed(Position::new(format!("{seq}:7"))),
            Checkpoint::Processed(Position::from_offset(42)),
            Checkpoint::Processed(Position::new("not-a-sequence-number")),
            Checkpoint::Ended,
        ] {
            assert_eq!(
                from_item(&item(&to_stored(&checkpoint).unwrap())),
                Some(checkpoint.clone()),
                "{checkpoint:?}"
            );
        }
    }

    #[test]
    fn kcl_forms() {
        let seq = "49590338271490256608559692538361571095921575989136588898";
        assert_eq!(
            to_stored(&Checkpoint::Processed(Position::new(format!("{seq}:2")))).unwrap(),
            Stored {
                checkpoint: seq.into(),
                sub_sequence: 2,
                start: None
            }
        );
        assert_eq!(
            to_stored(&Checkpoint::Ended).unwrap().checkpoint,
            "SHARD_END"
        );
        assert_eq!(
            to_stored(&Checkpoint::Start(StartPosition::Position(Position::new(
                seq
            ))))
            .unwrap()
            .sub_sequence,
            -1,
            "a start at S means nothing of S is processed yet"
        );
        // A KCL item at AT_TIMESTAMP has no time: no checkpoint, the group's start applies.
        let kcl = HashMap::from([
            (CHECKPOINT.to_owned(), s(AT_TIMESTAMP)),
            (CHECKPOINT_SUB.to_owned(), n(0)),
        ]);
        assert_eq!(from_item(&kcl), None);
        // An item the KCL made without a checkpoint yet.
        assert_eq!(from_item(&HashMap::new()), None);
    }
}

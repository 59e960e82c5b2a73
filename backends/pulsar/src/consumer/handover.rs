//! Taking over a partition from a member that is still connected, without delivering again
//! what it acknowledged.
//!
//! On a Failover subscription the broker picks the new active member at once but hands the
//! partition over a moment later (`activeConsumerFailoverDelayTimeMillis`, 1 s by default,
//! or at once when a read was in flight): it rewinds the cursor to the first unacknowledged
//! message, tells every member who is active now, and sends the new one everything
//! unacknowledged. The old member learns of it only then, together with the new one. Until
//! then it keeps handing out what it prefetched, and the acks its application sends for those
//! in the last moments reach the broker after the rewind: the new member has already been sent
//! those events, and would deliver acknowledged events again (the conformance `rebalance` case
//! saw 9 of them on a loaded machine, all acked 80 ms before the handover).
//!
//! So a member that becomes active for a partition while another member of its group is
//! connected to that partition holds the partition's events for `handover_grace`, the time
//! the previous owner has to hear of the change and for its acks to land, then reads the
//! subscription's cursor through the admin API and drops what was acknowledged meanwhile. A
//! member that takes a partition nobody else holds (the group's first, or after the previous
//! owner closed, whose acks precede its close on the wire, or crashed) skips that wait.
//!
//! Every takeover then waits for the broker's resend from the first unacknowledged entry
//! (`Acknowledged::resend_start`): what the broker sent the member before that, read before
//! its rewind, would put newer events ahead of older ones (the driver's `hold_for_handover`
//! says when that happens).

use std::time::Duration;

use pulsar::message::proto::MessageIdData;
use serde_json::Value;
use tributary::{Error, Result};

use crate::error::BACKEND;

/// Entries of one partition a subscription has acknowledged: everything up to the mark-delete
/// position, and the ranges acknowledged beyond it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Acknowledged {
    mark_delete: Option<(i64, i64)>,
    ranges: Vec<Range>,
}

/// `(ledger, entry)` bounds, each inclusive or exclusive as Guava's `RangeSet` prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Range {
    low: (i64, i64),
    low_inclusive: bool,
    high: (i64, i64),
    high_inclusive: bool,
}

impl Acknowledged {
    /// Reads a cursor of `internalStats`: `markDeletePosition` (`"ledger:entry"`) and
    /// `individuallyDeletedMessages` (`"[(3:5..3:9], (3:12..3:15]]"`).
    pub(crate) fn from_cursor(cursor: &Value) -> Result<Acknowledged> {
        let bad = |what: &str| {
            Error::other(format!(
                "the admin API's cursor statistics have an unexpected {what}: {cursor}"
            ))
            .with_backend(BACKEND)
        };
        let mark_delete = match cursor.get("markDeletePosition").and_then(Value::as_str) {
            Some(text) => Some(parse_position(text).ok_or_else(|| bad("markDeletePosition"))?),
            None => None,
        };
        let mut ranges = Vec::new();
        let listed = cursor
            .get("individuallyDeletedMessages")
            .and_then(Value::as_str)
            .unwrap_or("[]")
            .trim();
        let inner = listed
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .ok_or_else(|| bad("individuallyDeletedMessages"))?;
        for range in inner.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            ranges.push(parse_range(range).ok_or_else(|| bad("individuallyDeletedMessages"))?);
        }
        Ok(Acknowledged {
            mark_delete,
            ranges,
        })
    }

    /// Whether the message's entry (a whole batch, for batched messages) is acknowledged.
    pub(crate) fn covers(&self, id: &MessageIdData) -> bool {
        let at = (id.ledger_id as i64, id.entry_id as i64);
        self.mark_delete.is_some_and(|mark| at <= mark) || self.in_range(at).is_some()
    }

    fn in_range(&self, at: (i64, i64)) -> Option<&Range> {
        self.ranges.iter().find(|r| {
            let above = if r.low_inclusive {
                at >= r.low
            } else {
                at > r.low
            };
            let below = if r.high_inclusive {
                at <= r.high
            } else {
                at < r.high
            };
            above && below
        })
    }

    /// The entry a rewound cursor starts at: the one after the mark-delete position, past
    /// the ranges acknowledged beyond it. Unknown without a mark-delete position.
    fn first_unacknowledged(&self) -> Option<(i64, i64)> {
        let (ledger, entry) = self.mark_delete?;
        let mut next = (ledger, entry + 1);
        while let Some(range) = self.in_range(next) {
            next = if range.high_inclusive {
                (range.high.0, range.high.1 + 1)
            } else {
                range.high
            };
        }
        Some(next)
    }

    /// Where, among a taking-over member's queued entries (`(ledger, entry)` in arrival
    /// order, the acknowledged ones already removed), the broker's resend from the first
    /// unacknowledged entry begins: everything queued before it was read for this member
    /// before the cursor was rewound, and comes again after it. `None` while it has not
    /// arrived. An entry can begin the resend when it is the first unacknowledged one, or
    /// the first of a later ledger (the first unacknowledged position then lies past the
    /// end of its ledger). Without a mark-delete position any entry can.
    pub(crate) fn resend_start(
        &self,
        queued: impl IntoIterator<Item = (i64, i64)>,
    ) -> Option<usize> {
        let mut queued = queued.into_iter();
        let Some(next) = self.first_unacknowledged() else {
            return queued.next().map(|_| 0);
        };
        queued.position(|at| at <= next || (at.0 > next.0 && at.1 == 0))
    }
}

fn parse_position(text: &str) -> Option<(i64, i64)> {
    let (ledger, entry) = text.trim().split_once(':')?;
    Some((ledger.parse().ok()?, entry.parse().ok()?))
}

fn parse_range(text: &str) -> Option<Range> {
    let low_inclusive = match text.chars().next()? {
        '[' => true,
        '(' => false,
        _ => return None,
    };
    let high_inclusive = match text.chars().last()? {
        ']' => true,
        ')' => false,
        _ => return None,
    };
    let (low, high) = text[1..text.len() - 1].split_once("..")?;
    Some(Range {
        low: parse_position(low)?,
        low_inclusive,
        high: parse_position(high)?,
        high_inclusive,
    })
}

/// Finds a subscription among the keys of `map`: the broker names cursors by the
/// subscription's URL-encoded name, and subscriptions in topic statistics by the plain one.
pub(crate) fn find_subscription<'a>(map: &'a Value, subscription: &str) -> Option<&'a Value> {
    let map = map.as_object()?;
    map.get(subscription).or_else(|| {
        map.iter()
            .find(|(name, _)| url_decode(name).as_deref() == Some(subscription))
            .map(|(_, value)| value)
    })
}

/// Java's `URLDecoder.decode` (`+` is a space), which is how cursor names are written.
fn url_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut chars = text.bytes();
    while let Some(b) = chars.next() {
        match b {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = [chars.next()?, chars.next()?];
                let hex = std::str::from_utf8(&hex).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
            }
            other => bytes.push(other),
        }
    }
    String::from_utf8(bytes).ok()
}

/// What a member does when it becomes a partition's active member: hold its events for the
/// grace period, or not at all.
pub(crate) fn grace_needed(consumers: &[String], me: &str, grace: Duration) -> bool {
    !grace.is_zero() && consumers.iter().any(|name| name != me)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ledger: u64, entry: u64) -> MessageIdData {
        MessageIdData {
            ledger_id: ledger,
            entry_id: entry,
            ..Default::default()
        }
    }

    #[test]
    fn reads_a_cursor_as_the_broker_prints_it() {
        let cursor = serde_json::json!({
            "markDeletePosition": "17:3",
            "individuallyDeletedMessages": "[(17:5..17:9], (17:12..18:2], [19:0..19:4)]",
        });
        let acked = Acknowledged::from_cursor(&cursor).unwrap();
        let covered: Vec<bool> = [
            (17, 0),
            (17, 3),
            (17, 4),
            (17, 5),
            (17, 6),
            (17, 9),
            (17, 10),
            (17, 13),
            (18, 2),
            (18, 3),
            (19, 0),
            (19, 3),
            (19, 4),
        ]
        .iter()
        .map(|&(l, e)| acked.covers(&id(l, e)))
        .collect();
        assert_eq!(
            covered,
            [
                true, true, false, false, true, true, false, true, true, false, true, true, false
            ]
        );
    }

    #[test]
    fn an_untouched_cursor_covers_nothing_after_its_start() {
        let cursor = serde_json::json!({
            "markDeletePosition": "17:-1",
            "individuallyDeletedMessages": "[]",
        });
        let acked = Acknowledged::from_cursor(&cursor).unwrap();
        assert!(!acked.covers(&id(17, 0)));
        assert!(acked.covers(&id(16, 40)));
        assert!(
            Acknowledged::from_cursor(
                &serde_json::json!({ "individuallyDeletedMessages": "17:2" })
            )
            .is_err()
        );
    }

    #[test]
    fn the_resend_begins_at_the_first_unacknowledged_entry() {
        let cursor = serde_json::json!({
            "markDeletePosition": "17:3",
            "individuallyDeletedMessages": "[(17:3..17:5], (17:6..17:7]]",
        });
        let acked = Acknowledged::from_cursor(&cursor).unwrap();
        assert_eq!(acked.first_unacknowledged(), Some((17, 6)));
        // Read before the rewind: 17:20..17:22; the resend from 17:6 follows.
        let queued = [(17, 20), (17, 21), (17, 22), (17, 6), (17, 8), (17, 9)];
        assert_eq!(acked.resend_start(queued), Some(3));
        assert_eq!(acked.resend_start([(17, 20), (17, 21)]), None);
        assert_eq!(acked.resend_start([]), None);
        // The first unacknowledged entry lies past the end of ledger 17.
        assert_eq!(acked.resend_start([(18, 4), (18, 0), (18, 1)]), Some(1));
        let fresh = serde_json::json!({ "individuallyDeletedMessages": "[]" });
        let fresh = Acknowledged::from_cursor(&fresh).unwrap();
        assert_eq!(fresh.resend_start([(3, 9)]), Some(0));
    }

    #[test]
    fn finds_cursors_by_their_encoded_name() {
        let cursors = serde_json::json!({ "billing+eu%2Fwest": { "active": true }, "other": {} });
        assert!(find_subscription(&cursors, "billing eu/west").is_some());
        assert!(find_subscription(&cursors, "other").is_some());
        assert!(find_subscription(&cursors, "missing").is_none());
    }

    #[test]
    fn only_a_handover_from_a_connected_member_waits() {
        let grace = Duration::from_secs(1);
        let me = "tributary-1-0-aa";
        assert!(!grace_needed(&[me.to_owned()], me, grace));
        assert!(!grace_needed(&[], me, grace));
        assert!(grace_needed(
            &[me.to_owned(), "java-consumer".to_owned()],
            me,
            grace
        ));
        assert!(!grace_needed(
            &["java-consumer".to_owned()],
            me,
            Duration::ZERO
        ));
    }
}

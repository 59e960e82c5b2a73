//! The cases, one module per theme, and the registry that numbers and gates them.
//!
//! Each case uses fresh, uniquely named streams and groups, waits with deadlines (never sleeps
//! to synchronise) and compares exact contents. Its doc comment states its contract in one
//! line; the registry below repeats it for the report and the command line, and a test keeps
//! the two and `docs/conformance.md` in step.

mod delivery;
mod failure;
mod fidelity;
mod groups;
mod position;
mod scale;
mod support;

pub(crate) use support::{CaseOutcome, Ctx};

use futures::future::BoxFuture;
use tributary::AckModel;

/// One case: its number and name (stable: backends pin not-applicable cases by name), its
/// theme and contract, whether it needs fresh streams, its capability gate, and its body.
pub(crate) struct Case {
    pub number: u32,
    pub name: &'static str,
    pub theme: &'static str,
    pub contract: &'static str,
    /// Whether the case creates streams of its own (and so needs `admin` or a provisioning hook).
    pub fresh_streams: bool,
    pub applies: fn(&Ctx) -> Result<(), String>,
    pub run: for<'a> fn(&'a mut Ctx) -> BoxFuture<'a, CaseOutcome>,
}

macro_rules! case {
    ($number:expr, $theme:ident :: $name:ident, $applies:expr, $contract:literal) => {
        case!(@ $number, $theme, $name, $applies, $contract, true)
    };
    ($number:expr, $theme:ident :: $name:ident, $applies:expr, $contract:literal, no_streams) => {
        case!(@ $number, $theme, $name, $applies, $contract, false)
    };
    (@ $number:expr, $theme:ident, $name:ident, $applies:expr, $contract:literal, $fresh:expr) => {
        Case {
            number: $number,
            name: stringify!($name),
            theme: stringify!($theme),
            contract: $contract,
            fresh_streams: $fresh,
            applies: $applies,
            run: {
                fn run(c: &mut Ctx) -> BoxFuture<'_, CaseOutcome> {
                    Box::pin($theme::$name(c))
                }
                run
            },
        }
    };
}

fn always(_: &Ctx) -> Result<(), String> {
    Ok(())
}

fn needs(cond: bool, what: &str) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(format!("backend does not declare {what}"))
    }
}

fn needs_nack(c: &Ctx) -> Result<(), String> {
    needs(c.caps.nack, "nack")
}

fn needs_groups(c: &Ctx) -> Result<(), String> {
    needs(c.caps.lifecycle.competing_consumers, "competing consumers")
}

fn needs_per_key_order(c: &Ctx) -> Result<(), String> {
    needs(
        c.caps.ordering == tributary::Ordering::PerKey,
        "per-key ordering",
    )
}

/// Every case, in number order. Numbers are never reused or reordered: a new case takes the
/// next one, whatever its theme.
pub(crate) const ALL: &[Case] = &[
    case!(
        1,
        fidelity::round_trip,
        always,
        "1,000 events sent in batches arrive once each, with identical key, payload, headers and timestamp."
    ),
    case!(
        2,
        fidelity::binary_fidelity,
        always,
        "Empty and non-UTF-8 payloads, non-UTF-8 keys, binary header values, unicode header names, duplicate header names (in order) and 100 headers round-trip exactly."
    ),
    case!(
        3,
        fidelity::size_limit,
        |c| needs(c.caps.max_event_bytes.is_some(), "max_event_bytes"),
        "An event of exactly the declared maximum size round-trips; one byte more fails at send with a too-large error, and the producer keeps working."
    ),
    case!(
        4,
        fidelity::receipts,
        |c| needs(
            c.caps.receipts.partition && c.caps.receipts.position,
            "receipts with partition and position"
        ),
        "Every send returns a partition and position, and the consumer sees each event at exactly that partition and position."
    ),
    case!(
        5,
        delivery::ack,
        always,
        "An acked event is never delivered again to a later consumer of the same group."
    ),
    case!(
        6,
        delivery::no_ack_redelivers,
        always,
        "Deliveries never settled are redelivered to the group after their consumer closes, and after it is dropped without closing."
    ),
    case!(
        7,
        delivery::nack_redelivers,
        needs_nack,
        "A nacked event comes back to the same group, with a higher attempt count where attempts are declared."
    ),
    case!(
        8,
        delivery::out_of_order_acks,
        |c| needs(c.caps.ack == AckModel::Cumulative, "cumulative (log) acks"),
        "On a log, with 0, 2 and 3 acked and 1 not, a crash redelivers 1 first and never 0: the commit never passes an unacked event."
    ),
    case!(
        9,
        delivery::continue_after_errors,
        needs_nack,
        "A consumer that nacks every seventh delivery still processes all 100 events."
    ),
    case!(
        10,
        delivery::producer_close_flushes,
        always,
        "Every send confirmed to eight concurrent senders, before and during close, is stored; close stops later sends."
    ),
    case!(
        11,
        delivery::use_after_close,
        always,
        "Send or receive after close fails with a closed error; closing twice is harmless."
    ),
    case!(
        12,
        groups::per_key_order,
        needs_per_key_order,
        "Events of 20 keys sent by four concurrent senders arrive, key by key, in send order."
    ),
    case!(
        13,
        groups::competing_consumers,
        needs_groups,
        "Two consumers of one group together receive all 400 events, each some, none twice."
    ),
    case!(
        14,
        groups::fan_out,
        always,
        "Two groups each receive every event."
    ),
    case!(
        15,
        groups::rebalance,
        needs_groups,
        "A consumer joining mid-stream and another leaving lose nothing, and no acked event is delivered again."
    ),
    case!(
        16,
        groups::stream_isolation,
        always,
        "Events sent to one stream reach only that stream's consumers."
    ),
    case!(
        17,
        position::start_earliest_latest,
        |c| needs(
            c.caps.start.earliest && c.caps.start.latest,
            "start at earliest and latest"
        ),
        "A new group starting at earliest sees the events already stored; one starting at latest sees only those sent after it opened."
    ),
    case!(
        18,
        position::start_at_timestamp,
        |c| needs(c.caps.start.timestamp, "start at timestamp"),
        "A new group starting at time t sees exactly the events stored at or after t."
    ),
    case!(
        19,
        position::resume_after_restart_of_consumer,
        always,
        "A group reopened after a close continues after its committed progress, even when told to start at latest."
    ),
    case!(
        20,
        failure::unreachable_server,
        |c| {
            needs(c.caps.lifecycle.networked, "a network server")?;
            needs(
                c.harness.unreachable_url.is_some(),
                "an unreachable URL in the harness",
            )
        },
        "Sending to a server that is not there fails within 60 s with an unavailable or timeout error; it never hangs.",
        no_streams
    ),
    case!(
        21,
        failure::server_restart,
        |c| needs(c.harness.restart.is_some(), "a restart hook in the harness"),
        "Sends and receives resume after the server restarts, and the group keeps its committed progress."
    ),
    case!(
        22,
        failure::missing_stream,
        always,
        "Sending to or consuming a missing stream fails with a not-found error naming it, or creates it where auto-create is declared.",
        no_streams
    ),
    case!(
        23,
        failure::bad_configuration,
        always,
        "An unknown option, a malformed URL, an empty group name and an invalid stream name each fail with a configuration error.",
        no_streams
    ),
    case!(
        24,
        failure::cancellation,
        always,
        "Sends and receives dropped mid-flight leave the producer and consumer usable and lose no event."
    ),
    case!(
        25,
        scale::throughput,
        always,
        "100,000 small events (or the harness's scale) are produced in batches and consumed with none lost; events per second are reported."
    ),
    case!(
        26,
        position::lag,
        |c| needs(c.caps.lag, "consumer lag"),
        "Consumer lag counts the events the group has not acked, and follows new events and acks."
    ),
    case!(
        27,
        delivery::nack_order,
        |c| {
            needs_per_key_order(c)?;
            needs_nack(c)
        },
        "Of e0, e1, e2 under one key, with e0 and e1 nacked and e2 acked, e0 and e1 come back in that order before e3."
    ),
    case!(
        28,
        groups::concurrent_commits,
        always,
        "Consumers of four groups on one backend commit at the same moment, ten times over; every commit succeeds, each round's within 10 s (a commit that waits for a later one's answer fails it), and a group reopened after its last commit receives nothing again."
    ),
];

/// Why a case cannot run here, or `Ok` when it can.
pub(crate) fn gate(case: &Case, ctx: &Ctx) -> Result<(), String> {
    if case.fresh_streams && !ctx.can_make_streams() {
        return Err(
            "backend cannot create streams (no `admin` capability) and the harness has no \
             provisioning hook"
                .into(),
        );
    }
    (case.applies)(ctx)
}

#[cfg(test)]
mod tests {
    use super::ALL;

    fn theme_source(theme: &str) -> &'static str {
        match theme {
            "fidelity" => include_str!("fidelity.rs"),
            "delivery" => include_str!("delivery.rs"),
            "groups" => include_str!("groups.rs"),
            "position" => include_str!("position.rs"),
            "failure" => include_str!("failure.rs"),
            "scale" => include_str!("scale.rs"),
            other => panic!("no source for theme {other}"),
        }
    }

    /// The doc comment on a case's function, joined into one line.
    fn doc_of(source: &str, name: &str) -> Option<String> {
        let lines: Vec<&str> = source.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with(&format!("pub(crate) async fn {name}(")))?;
        let mut doc = Vec::new();
        for line in lines[..at].iter().rev() {
            match line.strip_prefix("///") {
                Some(text) => doc.push(text.trim()),
                None => break,
            }
        }
        doc.reverse();
        Some(doc.join(" "))
    }

    #[test]
    fn numbers_and_names_are_unique_and_dense() {
        for (i, case) in ALL.iter().enumerate() {
            assert_eq!(case.number as usize, i + 1, "{} is out of place", case.name);
            assert!(
                ALL.iter().filter(|c| c.name == case.name).count() == 1,
                "{} twice",
                case.name
            );
        }
    }

    /// The contract is written three times (the case's doc comment, the registry, the
    /// published list of cases); this keeps them the same.
    #[test]
    fn contracts_match_doc_comments_and_the_published_list() {
        let published = include_str!("../../../docs/conformance.md");
        for case in ALL {
            let doc = doc_of(theme_source(case.theme), case.name)
                .unwrap_or_else(|| panic!("{} has no function in {}.rs", case.name, case.theme));
            assert_eq!(doc, case.contract, "doc comment of {}", case.name);
            let row = format!("| {} | `{}` | {} |", case.number, case.name, case.contract);
            assert!(
                published.contains(&row),
                "docs/conformance.md lacks the row\n{row}"
            );
        }
    }
}

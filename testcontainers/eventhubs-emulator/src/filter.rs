//! The selector filter consumers send on attach: `amqp.annotation.x-opt-offset > '-1'` and
//! friends.

/// Where a consumer starts reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StartAt {
    /// First retained event.
    Earliest,
    /// Only events enqueued after the link attached.
    Latest,
    /// By offset (a byte position in this emulator).
    Offset { value: i64, inclusive: bool },
    /// By sequence number.
    Sequence { value: i64, inclusive: bool },
    /// By enqueue time, milliseconds since the Unix epoch.
    EnqueuedTime { millis: i64, inclusive: bool },
}

/// Parses a selector expression; the error text goes back to the client.
pub(crate) fn parse_selector(expr: &str) -> Result<StartAt, String> {
    let expr = expr.trim();
    let rest = expr.strip_prefix("amqp.annotation.").ok_or_else(|| {
        format!("unsupported selector {expr:?}: expected amqp.annotation.x-opt-...")
    })?;
    let (field, rest) = rest
        .split_once(|c: char| c == '>' || c == '<' || c == '=' || c.is_whitespace())
        .map(|(f, _)| (f, &rest[f.len()..]))
        .ok_or_else(|| format!("unsupported selector {expr:?}: no operator"))?;
    let rest = rest.trim_start();
    let (inclusive, rest) = if let Some(r) = rest.strip_prefix(">=") {
        (true, r)
    } else if let Some(r) = rest.strip_prefix('>') {
        (false, r)
    } else {
        return Err(format!(
            "unsupported selector {expr:?}: only > and >= are supported"
        ));
    };
    let value = rest
        .trim()
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .ok_or_else(|| format!("unsupported selector {expr:?}: value must be in single quotes"))?;
    let number = |what: &str| {
        value
            .parse::<i64>()
            .map_err(|_| format!("selector {expr:?}: {what} {value:?} is not a number"))
    };
    match field {
        "x-opt-offset" => match value {
            "-1" => Ok(StartAt::Earliest),
            "@latest" => Ok(StartAt::Latest),
            _ => Ok(StartAt::Offset {
                value: number("offset")?,
                inclusive,
            }),
        },
        "x-opt-sequence-number" => Ok(StartAt::Sequence {
            value: number("sequence number")?,
            inclusive,
        }),
        "x-opt-enqueued-time" => Ok(StartAt::EnqueuedTime {
            millis: number("enqueued time")?,
            inclusive,
        }),
        other => Err(format!("unsupported selector field {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_expressions() {
        assert_eq!(
            parse_selector("amqp.annotation.x-opt-offset > '-1'"),
            Ok(StartAt::Earliest)
        );
        assert_eq!(
            parse_selector("amqp.annotation.x-opt-offset > '@latest'"),
            Ok(StartAt::Latest)
        );
        assert_eq!(
            parse_selector("amqp.annotation.x-opt-offset >='120'"),
            Ok(StartAt::Offset {
                value: 120,
                inclusive: true
            })
        );
        assert_eq!(
            parse_selector("amqp.annotation.x-opt-sequence-number >'5'"),
            Ok(StartAt::Sequence {
                value: 5,
                inclusive: false
            })
        );
        assert_eq!(
            parse_selector("amqp.annotation.x-opt-enqueued-time >= '1700000000000'"),
            Ok(StartAt::EnqueuedTime {
                millis: 1_700_000_000_000,
                inclusive: true
            })
        );
    }

    #[test]
    fn junk_is_an_error_not_a_panic() {
        for junk in [
            "",
            "amqp.annotation.",
            "amqp.annotation.x-opt-offset",
            "amqp.annotation.x-opt-offset < '1'",
            "amqp.annotation.x-opt-offset > 1",
            "amqp.annotation.x-opt-offset > 'x'",
            "amqp.annotation.x-opt-foo > '1'",
            "amqp.annotation.x-opt-offset > '",
            "sequence = 1",
            "amqp.annotation.x-opt-offset>'\u{e9}",
        ] {
            assert!(parse_selector(junk).is_err(), "{junk:?}");
        }
    }
}

//! Positions are Pulsar message ids in the Java client's text form:
//! `ledgerId:entryId:partitionIndex[:batchIndex]`, the partition index -1 for a
//! non-partitioned topic.

use tributary::{Error, Position, Result};

/// A message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct MessagePosition {
    pub ledger: u64,
    pub entry: u64,
    pub partition: i32,
    pub batch: Option<i32>,
}

impl MessagePosition {
    pub(crate) fn to_position(self) -> Position {
        // Digits written by hand on the stack: through `core::fmt` each receipt cost about
        // 1,100 instructions (callgrind), on the path from a batch's ack to its sender.
        let mut text = Text::default();
        text.unsigned(self.ledger);
        text.push(b':');
        text.unsigned(self.entry);
        text.push(b':');
        text.signed(self.partition);
        if let Some(batch) = self.batch {
            text.push(b':');
            text.signed(batch);
        }
        Position::new(text.as_str())
    }

    pub(crate) fn parse(position: &Position) -> Result<MessagePosition> {
        let bad = || {
            Error::config(format!(
                "`{position}` is not a Pulsar position: expected ledgerId:entryId:partitionIndex[:batchIndex], as receipts and deliveries give"
            ))
        };
        let parts: Vec<&str> = position.as_str().split(':').collect();
        if !(3..=4).contains(&parts.len()) {
            return Err(bad());
        }
        Ok(MessagePosition {
            ledger: parts[0].parse().map_err(|_| bad())?,
            entry: parts[1].parse().map_err(|_| bad())?,
            partition: parts[2].parse().map_err(|_| bad())?,
            batch: match parts.get(3) {
                Some(b) => Some(b.parse().map_err(|_| bad())?),
                None => None,
            },
        })
    }
}

/// The longest id's text: two `u64`s, two `i32`s and three colons (65 bytes).
const LONGEST: usize = 2 * 20 + 2 * 11 + 3;

/// A message id's text being written.
struct Text {
    bytes: [u8; LONGEST],
    len: usize,
}

impl Default for Text {
    fn default() -> Self {
        Text {
            bytes: [0; LONGEST],
            len: 0,
        }
    }
}

impl Text {
    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    fn unsigned(&mut self, mut value: u64) {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        let digits = &digits[start..];
        self.bytes[self.len..self.len + digits.len()].copy_from_slice(digits);
        self.len += digits.len();
    }

    fn signed(&mut self, value: i32) {
        if value < 0 {
            self.push(b'-');
        }
        self.unsigned(u64::from(value.unsigned_abs()));
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits, '-' and ':' are written.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_in_the_java_form() {
        let p = MessagePosition {
            ledger: 12,
            entry: 3,
            partition: -1,
            batch: None,
        };
        assert_eq!(p.to_position().as_str(), "12:3:-1");
        assert_eq!(MessagePosition::parse(&p.to_position()).unwrap(), p);
        let b = MessagePosition {
            batch: Some(4),
            partition: 2,
            ..p
        };
        assert_eq!(b.to_position().as_str(), "12:3:2:4");
        assert_eq!(MessagePosition::parse(&b.to_position()).unwrap(), b);
        let longest = MessagePosition {
            ledger: u64::MAX,
            entry: u64::MAX,
            partition: i32::MIN,
            batch: Some(i32::MIN),
        };
        assert_eq!(
            longest.to_position().as_str(),
            format!("{}:{}:{}:{}", u64::MAX, u64::MAX, i32::MIN, i32::MIN)
        );
        assert_eq!(
            MessagePosition::parse(&longest.to_position()).unwrap(),
            longest
        );
        for (ledger, entry, partition, batch) in [
            (0, 0, 0, Some(0)),
            (9, 10, -10, Some(99)),
            (1_000_000_007, 123_456, i32::MAX, Some(i32::MAX)),
            (u64::MAX - 1, 1, -1, None),
        ] {
            let p = MessagePosition {
                ledger,
                entry,
                partition,
                batch,
            };
            let want = match batch {
                Some(b) => format!("{ledger}:{entry}:{partition}:{b}"),
                None => format!("{ledger}:{entry}:{partition}"),
            };
            assert_eq!(p.to_position().as_str(), want);
        }
        for bad in ["", "1:2", "a:b:c", "1:2:3:4:5", "1:2:x"] {
            assert!(
                MessagePosition::parse(&Position::new(bad)).is_err(),
                "{bad}"
            );
        }
    }
}

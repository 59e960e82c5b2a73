//! Positions are Pulsar message ids in the Java client's text form:
//! `ledgerId:entryId:partitionIndex[:batchIndex]`, the partition index -1 for a
//! non-partitioned topic.

use std::fmt::Write as _;

use tributary::{Error, Position, Result};

/// The longest id: two u64, an i32 and an i32 with their separators (20 + 20 + 11 + 11 + 3).
const MAX_TEXT: usize = 65;

/// A fixed buffer that `write!` fills.
struct StackText {
    bytes: [u8; MAX_TEXT],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        StackText {
            bytes: [0; MAX_TEXT],
            len: 0,
        }
    }
}

impl StackText {
    fn as_str(&self) -> &str {
        // Only whole `&str`s are written, so the bytes are UTF-8.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

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
        // Written on the stack: a `format!` here was a `String` (grown once or twice) per
        // receipt, only to be copied into the position, inline for ids of up to 24 bytes.
        let mut text = StackText::default();
        let written = match self.batch {
            Some(batch) => write!(
                text,
                "{}:{}:{}:{batch}",
                self.ledger, self.entry, self.partition
            ),
            None => write!(text, "{}:{}:{}", self.ledger, self.entry, self.partition),
        };
        debug_assert!(written.is_ok(), "a message id fits in {} bytes", MAX_TEXT);
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
        for bad in ["", "1:2", "a:b:c", "1:2:3:4:5", "1:2:x"] {
            assert!(
                MessagePosition::parse(&Position::new(bad)).is_err(),
                "{bad}"
            );
        }
    }
}

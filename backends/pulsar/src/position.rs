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
        // Written on the stack: a `format!` here was a `String` per receipt, only to be copied
        // into the position.
        match self.batch {
            Some(batch) => Position::from_fmt(format_args!(
                "{}:{}:{}:{batch}",
                self.ledger, self.entry, self.partition
            )),
            None => Position::from_fmt(format_args!(
                "{}:{}:{}",
                self.ledger, self.entry, self.partition
            )),
        }
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

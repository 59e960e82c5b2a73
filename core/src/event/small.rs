//! The storage behind [`PartitionId`](super::PartitionId) and [`Position`](super::Position).
//!
//! Every delivery carries both, and the group engine compares partition ids on every ack, so
//! they are built, cloned, compared and dropped millions of times a second: the profile showed
//! an `Arc<str>` allocation per position and the natural-order comparison as the largest single
//! costs of settling an ack. Ids and offsets of up to [`INLINE`] bytes (every Kafka and local
//! offset, partition numbers, Kinesis shard ids, Event Hubs partitions) live inline, with no
//! allocation and a copy for a clone; longer ones (Kinesis sequence numbers have 56 digits,
//! Pulsar message ids can be long) share one `Arc<str>` as before. Which form a string takes
//! depends only on its length, and equality, hashing and order look at the string alone, so
//! the two forms can never disagree.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Longest string kept inline. With the length, the number flag and the tag the inline form is
/// 27 bytes, inside the 32 the enum takes anyway (an `Arc<str>` plus its tag, 8-aligned).
pub(super) const INLINE: usize = 24;
// `Ord` compares inline numbers as three big-endian words.
const _: () = assert!(INLINE == 24);

/// Longest text [`SmallStr::from_fmt`] writes on the stack: a Kinesis sequence number (56
/// digits) with a sub-record index, or a Pulsar message id (65 bytes at most), fits.
const FMT_BUFFER: usize = 96;

/// A fixed buffer that `fmt::write` fills; it refuses what does not fit.
struct StackText {
    bytes: [u8; FMT_BUFFER],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        StackText {
            bytes: [0; FMT_BUFFER],
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

#[derive(Clone)]
pub(super) enum SmallStr {
    Inline {
        len: u8,
        /// A plain decimal number without leading zeros: two such strings order by length,
        /// then byte by byte, which is what the natural order makes of them.
        number: bool,
        /// The string's bytes, then zeros.
        bytes: [u8; INLINE],
    },
    Heap(Arc<str>),
}

impl SmallStr {
    pub(super) fn new(s: &str) -> Self {
        if s.len() > INLINE {
            return SmallStr::Heap(Arc::from(s));
        }
        let mut bytes = [0u8; INLINE];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        SmallStr::Inline {
            len: s.len() as u8,
            number: is_plain_number(s.as_bytes()),
            bytes,
        }
    }

    /// What `args` formats to, written on the stack (no temporary `String`) when it is up
    /// to [`FMT_BUFFER`] bytes long.
    pub(super) fn from_fmt(args: std::fmt::Arguments<'_>) -> Self {
        let mut text = StackText::default();
        match std::fmt::write(&mut text, args) {
            Ok(()) => SmallStr::new(text.as_str()),
            Err(_) => SmallStr::new(&std::fmt::format(args)),
        }
    }

    /// The decimal form of `n`, written in place (no temporary `String`).
    pub(super) fn from_u64(mut n: u64) -> Self {
        // u64::MAX has 20 digits, within INLINE. Two digits per division: the memory log makes
        // a position per appended event (about 110 instructions each, one digit at a time).
        const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
            2021222324252627282930313233343536373839\
            4041424344454647484950515253545556575859\
            6061626364656667686970717273747576777879\
            8081828384858687888990919293949596979899";
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        while n >= 100 {
            let pair = (n % 100) as usize * 2;
            n /= 100;
            start -= 2;
            digits[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        }
        if n >= 10 {
            let pair = n as usize * 2;
            start -= 2;
            digits[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        } else {
            start -= 1;
            digits[start] = b'0' + n as u8;
        }
        let len = digits.len() - start;
        let mut bytes = [0u8; INLINE];
        bytes[..len].copy_from_slice(&digits[start..]);
        SmallStr::Inline {
            len: len as u8,
            number: true,
            bytes,
        }
    }

    /// The decimal number one greater than this plain number, its digits incremented in place
    /// (about a fifth of [`SmallStr::from_u64`]'s cost); `None` unless this is an inline plain
    /// number of at most 18 digits (so the successor is always a `u64`).
    pub(super) fn successor(&self) -> Option<Self> {
        let SmallStr::Inline {
            len,
            number: true,
            bytes,
        } = self
        else {
            return None;
        };
        let (len, mut bytes) = (usize::from(*len), *bytes);
        if len > 18 {
            return None;
        }
        for i in (0..len).rev() {
            if bytes[i] != b'9' {
                bytes[i] += 1;
                return Some(SmallStr::Inline {
                    len: len as u8,
                    number: true,
                    bytes,
                });
            }
            bytes[i] = b'0';
        }
        // All nines: a one, then as many zeros.
        bytes[0] = b'1';
        bytes[len] = b'0';
        Some(SmallStr::Inline {
            len: len as u8 + 1,
            number: true,
            bytes,
        })
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        match self {
            SmallStr::Inline { len, bytes, .. } => &bytes[..usize::from(*len)],
            SmallStr::Heap(s) => s.as_bytes(),
        }
    }

    pub(super) fn as_str(&self) -> &str {
        match self {
            // Checking ≤ 24 bytes again costs a few nanoseconds and keeps the crate free of
            // `unsafe`; the hot paths (compare, hash, equality) work on bytes.
            SmallStr::Inline { .. } => {
                std::str::from_utf8(self.as_bytes()).expect("copied from a str")
            }
            SmallStr::Heap(s) => s,
        }
    }

    /// The value of a plain number, without going through `str::parse` when it is inline.
    pub(super) fn to_u64(&self) -> Option<u64> {
        match self {
            SmallStr::Inline {
                number: true,
                len,
                bytes,
            } if *len <= 19 => Some(
                bytes[..usize::from(*len)]
                    .iter()
                    .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
            ),
            _ => self.as_str().parse().ok(),
        }
    }
}

fn is_plain_number(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit) && (s.len() == 1 || s[0] != b'0')
}

impl std::fmt::Debug for SmallStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for SmallStr {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for SmallStr {}

impl Hash for SmallStr {
    /// As the string hashes, whichever the form.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl Ord for SmallStr {
    /// Inlined where maps search by id (the group engine looks a partition up on every ack):
    /// the fast path is a few instructions, and the call with its register saves cost more
    /// than the compare did.
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        if let (
            SmallStr::Inline {
                len: a,
                number: true,
                bytes: x,
            },
            SmallStr::Inline {
                len: b,
                number: true,
                bytes: y,
            },
        ) = (self, other)
        {
            // Same length: the unused tails are zeros on both sides, so the arrays compare as
            // the digits do, eight bytes at a time (the group engine compares partition ids on
            // every ack: a byte-wise array compare was about 60 instructions a call).
            return a.cmp(b).then_with(|| {
                let word = |b: &[u8; INLINE], i: usize| {
                    u64::from_be_bytes(b[i..i + 8].try_into().expect("eight bytes"))
                };
                (word(x, 0), word(x, 8), word(x, 16)).cmp(&(word(y, 0), word(y, 8), word(y, 16)))
            });
        }
        natural_cmp(self.as_bytes(), other.as_bytes())
    }
}

impl PartialOrd for SmallStr {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares runs of ASCII digits by numeric value and everything else byte by byte; strings
/// that compare equal that way (`"07"`, `"7"`) fall back to plain byte order, so the order
/// agrees with equality.
#[inline(never)]
pub(super) fn natural_cmp(x: &[u8], y: &[u8]) -> Ordering {
    use std::cmp::Ordering::Equal;
    let (mut i, mut j) = (0, 0);
    while i < x.len() && j < y.len() {
        if x[i].is_ascii_digit() && y[j].is_ascii_digit() {
            let run = |s: &[u8], mut k: usize| {
                let start = k;
                while k < s.len() && s[k].is_ascii_digit() {
                    k += 1;
                }
                (start, k)
            };
            let ((xs, xe), (ys, ye)) = (run(x, i), run(y, j));
            fn trim(s: &[u8], mut start: usize, end: usize) -> &[u8] {
                while start + 1 < end && s[start] == b'0' {
                    start += 1;
                }
                &s[start..end]
            }
            let (xn, yn) = (trim(x, xs, xe), trim(y, ys, ye));
            let by_value = xn.len().cmp(&yn.len()).then_with(|| xn.cmp(yn));
            if by_value != Equal {
                return by_value;
            }
            (i, j) = (xe, ye);
        } else {
            if x[i] != y[j] {
                return x[i].cmp(&y[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (x.len() - i).cmp(&(y.len() - j)).then_with(|| x.cmp(y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::hash::BuildHasher;

    fn hash_of(value: &impl Hash) -> u64 {
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(value)
    }

    /// A string in both forms, whatever its length (the public constructors pick by length).
    fn both(s: &str) -> [SmallStr; 2] {
        let inline = if s.len() <= INLINE {
            SmallStr::new(s)
        } else {
            SmallStr::Heap(Arc::from(s))
        };
        [inline, SmallStr::Heap(Arc::from(s))]
    }

    #[test]
    fn the_inline_form_fits_the_size_of_the_shared_one() {
        assert_eq!(std::mem::size_of::<SmallStr>(), 32);
        assert!(matches!(
            SmallStr::new(&"9".repeat(24)),
            SmallStr::Inline { .. }
        ));
        assert!(matches!(SmallStr::new(&"9".repeat(25)), SmallStr::Heap(_)));
        assert!(matches!(
            SmallStr::from_u64(u64::MAX),
            SmallStr::Inline { .. }
        ));
    }

    proptest! {
        /// Whichever form each side takes, equality, hash and order are those of the strings,
        /// and the order is the natural one (the fast path for plain numbers agrees with it).
        #[test]
        fn forms_agree_with_the_strings(
            a in "[0-9]{0,30}|[a-c0-9:-]{0,30}|0*[0-9]{1,3}",
            b in "[0-9]{0,30}|[a-c0-9:-]{0,30}|0*[0-9]{1,3}",
        ) {
            for x in both(&a) {
                prop_assert_eq!(x.as_str(), a.as_str());
                prop_assert_eq!(hash_of(&x), hash_of(&a.as_str()));
                for y in both(&b) {
                    prop_assert_eq!(x == y, a == b);
                    prop_assert_eq!(x.cmp(&y), natural_cmp(a.as_bytes(), b.as_bytes()));
                    if a == b {
                        prop_assert_eq!(hash_of(&x), hash_of(&y));
                    }
                }
            }
        }

        /// Offsets written in place are the strings `to_string` makes, in numeric order.
        #[test]
        fn numbers_written_in_place_match_their_decimal_strings(
            n in any::<u64>(), m in prop_oneof![any::<u64>(), 0u64..1000]
        ) {
            let (x, y) = (SmallStr::from_u64(n), SmallStr::from_u64(m));
            let text = n.to_string();
            prop_assert_eq!(x.as_str(), text.as_str());
            prop_assert_eq!(&x, &SmallStr::new(&text));
            prop_assert_eq!(hash_of(&x), hash_of(&SmallStr::Heap(Arc::from(text.as_str()))));
            prop_assert_eq!(x.to_u64(), Some(n));
            prop_assert_eq!(x.cmp(&y), n.cmp(&m));
        }
    }

    #[test]
    fn successors_are_the_next_numbers() {
        let mut edges = vec![0u64, 1, 8];
        for digits in 1..20 {
            let p = 10u64.pow(digits);
            edges.extend([p - 2, p - 1, p, p + 1]);
        }
        for n in edges {
            let next = SmallStr::from_u64(n).successor();
            if n >= 10u64.pow(18) {
                assert!(next.is_none(), "{n}");
            } else {
                let next = next.expect("a successor");
                assert_eq!(next.as_str(), (n + 1).to_string());
                assert_eq!(next, SmallStr::from_u64(n + 1));
            }
        }
        assert!(SmallStr::new("07").successor().is_none());
        assert!(SmallStr::new("1:2").successor().is_none());
    }

    #[test]
    fn numbers_at_each_digit_count_are_written_whole() {
        let mut edges = vec![0u64, u64::MAX];
        for digits in 1..20 {
            let p = 10u64.pow(digits);
            edges.extend([p - 1, p, p + 1, p + 10]);
        }
        for n in edges {
            assert_eq!(SmallStr::from_u64(n).as_str(), n.to_string());
        }
    }

    #[test]
    fn formatted_text_is_the_same_string_whatever_its_length() {
        for len in [0, 1, INLINE, INLINE + 1, FMT_BUFFER, FMT_BUFFER + 1, 300] {
            let text = "7".repeat(len);
            let formatted = SmallStr::from_fmt(format_args!("{text}"));
            assert_eq!(formatted, SmallStr::new(&text), "length {len}");
            assert_eq!(formatted.as_str(), text);
        }
        let kpl = SmallStr::from_fmt(format_args!("{}:{}", "4".repeat(56), 12));
        assert_eq!(kpl.as_str(), format!("{}:12", "4".repeat(56)));
    }

    #[test]
    fn numbers_parse_as_before() {
        for s in [
            "007",
            "+5",
            "",
            "18446744073709551615",
            "18446744073709551616",
            "1a",
        ] {
            assert_eq!(SmallStr::new(s).to_u64(), s.parse::<u64>().ok(), "{s}");
        }
    }
}

//! Partition-key hashing as the Event Hubs gateway does it: Bob Jenkins' lookup3
//! `hashlittle2` (public domain) over the key's UTF-8 bytes with both seeds 0, the two results
//! XOR-ed and truncated to 16 bits, then `|hash % partitions|`. Matching the gateway means a key
//! lands on the same partition here as in Azure and as the SDKs' buffered producers predict.

fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

fn finish(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

/// Little-endian word from up to four bytes (missing high bytes are zero).
fn word(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .enumerate()
        .fold(0u32, |w, (i, &b)| w | (u32::from(b) << (8 * i)))
}

/// lookup3 `hashlittle2`: returns `(primary, secondary)`.
fn hashlittle2(data: &[u8], seed1: u32, seed2: u32) -> (u32, u32) {
    let mut a = 0xdead_beef_u32
        .wrapping_add(data.len() as u32)
        .wrapping_add(seed1);
    let mut b = a;
    let mut c = a.wrapping_add(seed2);
    let mut rest = data;
    while rest.len() > 12 {
        a = a.wrapping_add(word(&rest[0..4]));
        b = b.wrapping_add(word(&rest[4..8]));
        c = c.wrapping_add(word(&rest[8..12]));
        mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    if rest.is_empty() {
        return (c, b);
    }
    a = a.wrapping_add(word(&rest[..rest.len().min(4)]));
    if rest.len() > 4 {
        b = b.wrapping_add(word(&rest[4..rest.len().min(8)]));
    }
    if rest.len() > 8 {
        c = c.wrapping_add(word(&rest[8..]));
    }
    finish(&mut a, &mut b, &mut c);
    (c, b)
}

/// The gateway's 16-bit hash of a partition key.
pub(crate) fn key_hash(key: &str) -> i16 {
    let (primary, secondary) = hashlittle2(key.as_bytes(), 0, 0);
    (primary ^ secondary) as u16 as i16
}

/// The partition index (of `partitions`, at least 1) that `key` maps to.
pub(crate) fn partition_for_key(key: &str, partitions: usize) -> usize {
    let n = partitions.max(1) as i32;
    (i32::from(key_hash(key)) % n).unsigned_abs() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published vectors of the Azure SDKs' partition resolver tests (the gateway's values).
    #[test]
    fn matches_the_service() {
        for (key, expected) in [
            ("7", -15263),
            ("131", 30562),
            ("7149583486996073602", 12977),
            ("FWfAT", -22341),
            ("sOdeEAsyQoEuEFPGerWO", -6503),
            ("!c*_!I@1^c", 15372),
            ("p4*!jioeO/z-!-;w:dh", -3104),
            ("$0cb", 26269),
            ("-4189260826195535198", 453),
        ] {
            assert_eq!(key_hash(key), expected, "{key}");
        }
    }

    #[test]
    fn partition_in_range() {
        for key in ["", "a", "some-key", "\u{1F600}"] {
            assert!(partition_for_key(key, 4) < 4);
        }
    }
}

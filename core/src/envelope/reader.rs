//! A cursor over a message body for the big-endian layouts tributary writes into bodies (the
//! header block above, Kinesis's envelope): every field read is a slice of the input, never a
//! copy, and a field that runs past the end is an error naming the byte, never a panic (bodies
//! come from the network and from other clients).

use std::fmt;

use bytes::Bytes;

/// Reads fields from the front of a body, in order.
///
/// ```
/// use bytes::Bytes;
/// use tributary::envelope::ByteReader;
///
/// let body = Bytes::from_static(b"\x00\x00\x00\x02hi!");
/// let mut reader = ByteReader::new(&body);
/// let len = reader.u32()? as usize;
/// assert_eq!(reader.take(len)?.as_ref(), b"hi");
/// assert_eq!(reader.rest().as_ref(), b"!");
/// assert_eq!(reader.take(1).unwrap_err().to_string(), "truncated at byte 7");
/// # Ok::<(), tributary::envelope::Truncated>(())
/// ```
#[derive(Debug, Clone)]
pub struct ByteReader<'a> {
    data: &'a Bytes,
    at: usize,
}

impl<'a> ByteReader<'a> {
    /// A reader at the first byte of `data`.
    pub fn new(data: &'a Bytes) -> Self {
        ByteReader { data, at: 0 }
    }

    /// A reader `at` bytes into `data` (past a magic number the caller has checked), so that
    /// the byte an error names counts from the start of `data`.
    pub fn starting_at(data: &'a Bytes, at: usize) -> Self {
        ByteReader {
            data,
            at: at.min(data.len()),
        }
    }

    /// How many bytes have been read, counting from the start of the data.
    pub fn position(&self) -> usize {
        self.at
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<Bytes, Truncated> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.data.len())
            .ok_or(Truncated { at: self.at })?;
        let out = self.data.slice(self.at..end);
        self.at = end;
        Ok(out)
    }

    /// The next 4 bytes as a big-endian `u32` (the block's lengths and counts).
    pub fn u32(&mut self) -> Result<u32, Truncated> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// The next 8 bytes as a big-endian `i64` (milliseconds since the epoch).
    pub fn i64(&mut self) -> Result<i64, Truncated> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// Everything after what was read (the payload after a header block); the reader is then
    /// at the end.
    pub fn rest(&mut self) -> Bytes {
        let out = self.data.slice(self.at..);
        self.at = self.data.len();
        out
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Truncated> {
        let bytes = self.take(N)?;
        Ok(bytes[..].try_into().expect("take returned N bytes"))
    }
}

/// A field of a body ran past its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Truncated {
    /// The byte the field started at, counting from the start of the data.
    pub at: usize,
}

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "truncated at byte {}", self.at)
    }
}

impl std::error::Error for Truncated {}

/// For decoders that report a malformed body as text (the reason a body is delivered as it
/// is), so `?` carries a truncation into them.
impl From<Truncated> for String {
    fn from(truncated: Truncated) -> String {
        truncated.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fields_are_read_in_order_and_a_short_one_names_its_byte() {
        let data = Bytes::from_static(b"MAGIC\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x03abcd");
        let mut reader = ByteReader::starting_at(&data, 5);
        assert_eq!(reader.i64(), Ok(256));
        assert_eq!(reader.u32(), Ok(3));
        assert_eq!(reader.take(3).unwrap().as_ref(), b"abc");
        assert_eq!(reader.position(), 20);
        assert_eq!(reader.take(2), Err(Truncated { at: 20 }));
        assert_eq!(reader.position(), 20, "a failed read consumes nothing");
        assert_eq!(
            reader.u32().unwrap_err().to_string(),
            "truncated at byte 20"
        );
        assert_eq!(reader.rest().as_ref(), b"d");
        assert_eq!(reader.rest().as_ref(), b"");
    }

    proptest! {
        /// No length, however large, panics or reads past the end.
        #[test]
        fn any_length_is_safe(data in prop::collection::vec(any::<u8>(), 0..32), start in 0usize..40, n in any::<usize>()) {
            let data = Bytes::from(data);
            let mut reader = ByteReader::starting_at(&data, start);
            match reader.take(n) {
                Ok(taken) => prop_assert_eq!(taken.len(), n),
                Err(Truncated { at }) => prop_assert!(at <= data.len()),
            }
            prop_assert!(reader.position() <= data.len());
            let _ = reader.rest();
        }
    }
}

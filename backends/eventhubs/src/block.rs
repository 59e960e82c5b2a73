//! The header block tributary puts before the payload when headers cannot travel natively
//! (here: repeated names): `u32 count`, then per header `u32 name length`, name, `u32 value
//! length`, value (big-endian lengths), then the payload. The same block the Pub/Sub backend
//! writes, so an event bridged between them reads the same.

use bytes::{BufMut, Bytes, BytesMut};
use tributary::Headers;

pub(crate) fn write(headers: &Headers, payload: &Bytes) -> Bytes {
    let mut block =
        BytesMut::with_capacity(payload.len() + headers.encoded_len() + 4 + 8 * headers.len());
    block.put_u32(headers.len() as u32);
    for (name, value) in headers.iter() {
        block.put_u32(name.len() as u32);
        block.put_slice(name.as_bytes());
        block.put_u32(value.len() as u32);
        block.put_slice(value);
    }
    block.put_slice(payload);
    block.freeze()
}

pub(crate) fn read(data: &Bytes) -> Result<(Headers, Bytes), String> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<Bytes, String> {
        let end = at
            .checked_add(n)
            .filter(|&e| e <= data.len())
            .ok_or("truncated")?;
        let out = data.slice(at..end);
        at = end;
        Ok(out)
    };
    let length = |b: Bytes| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = length(take(4)?);
    let mut headers = Headers::new();
    for _ in 0..count {
        let name_len = length(take(4)?);
        let name = take(name_len)?;
        let name = std::str::from_utf8(&name)
            .map_err(|_| "header name is not UTF-8")?
            .to_owned();
        let value_len = length(take(4)?);
        headers.append(name, take(value_len)?);
    }
    Ok((headers, data.slice(at..)))
}

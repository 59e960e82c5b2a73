//! The performatives and their parts that `wire_compat` completes: each type's field count and
//! the defaults the specification gives null fields, and a reader of just enough of the AMQP
//! type system (values' lengths, descriptors, lists) to re-encode them with every field.

pub(super) const NULL: u8 = 0x40;

/// Spec defaults used for null fields (constructor and value bytes).
pub(super) const UINT_MAX: &[u8] = &[0x70, 0xff, 0xff, 0xff, 0xff];
pub(super) const USHORT_MAX: &[u8] = &[0x60, 0xff, 0xff];
const FALSE: &[u8] = &[0x42];
const UINT0: &[u8] = &[0x43];
const UBYTE0: &[u8] = &[0x50, 0x00];
const UBYTE2: &[u8] = &[0x50, 0x02];
/// `session-end`, the default expiry policy of sources and targets.
const SESSION_END: &[u8] = &[
    0xa3, 11, b's', b'e', b's', b's', b'i', b'o', b'n', b'-', b'e', b'n', b'd',
];

/// Field count and per-field defaults of the composite types this layer completes.
fn spec(code: u64) -> Option<&'static [Option<&'static [u8]>]> {
    const N: Option<&[u8]> = None;
    Some(match code {
        // open: container-id hostname max-frame-size channel-max idle-time-out outgoing-locales
        // incoming-locales offered-capabilities desired-capabilities properties
        0x10 => &[N, N, Some(UINT_MAX), Some(USHORT_MAX), N, N, N, N, N, N],
        // begin: remote-channel next-outgoing-id incoming-window outgoing-window handle-max
        // offered-capabilities desired-capabilities properties
        0x11 => &[N, N, N, N, Some(UINT_MAX), N, N, N],
        // attach: name handle role snd-settle-mode rcv-settle-mode source target unsettled
        // incomplete-unsettled initial-delivery-count max-message-size offered-capabilities
        // desired-capabilities properties
        0x12 => &[
            N,
            N,
            N,
            Some(UBYTE2),
            Some(UBYTE0),
            N,
            N,
            N,
            Some(FALSE),
            N,
            N,
            N,
            N,
            N,
        ],
        // flow: next-incoming-id incoming-window next-outgoing-id outgoing-window handle
        // delivery-count link-credit available drain echo properties
        0x13 => &[N, N, N, N, N, N, N, N, Some(FALSE), Some(FALSE), N],
        // transfer: handle delivery-id delivery-tag message-format settled more rcv-settle-mode
        // state resume aborted batchable
        0x14 => &[
            N,
            N,
            N,
            N,
            N,
            Some(FALSE),
            N,
            N,
            Some(FALSE),
            Some(FALSE),
            Some(FALSE),
        ],
        // disposition: role first last settled state batchable
        0x15 => &[N, N, N, Some(FALSE), N, Some(FALSE)],
        // detach: handle closed error
        0x16 => &[N, Some(FALSE), N],
        // end, close: error
        0x17 | 0x18 => &[N],
        // error: condition description info
        0x1d => &[N, N, N],
        // received: section-number section-offset
        0x23 => &[N, N],
        // rejected: error
        0x25 => &[N],
        // modified: delivery-failed undeliverable-here message-annotations
        0x27 => &[N, N, N],
        // source: address durable expiry-policy timeout dynamic dynamic-node-properties
        // distribution-mode filter default-outcome outcomes capabilities
        0x28 => &[
            N,
            Some(UINT0),
            Some(SESSION_END),
            Some(UINT0),
            Some(FALSE),
            N,
            N,
            N,
            N,
            N,
            N,
        ],
        // target: address durable expiry-policy timeout dynamic dynamic-node-properties
        // capabilities
        0x29 => &[
            N,
            Some(UINT0),
            Some(SESSION_END),
            Some(UINT0),
            Some(FALSE),
            N,
            N,
        ],
        // sasl-mechanisms, sasl-challenge, sasl-response
        0x40 | 0x42 | 0x43 => &[N],
        // sasl-init: mechanism initial-response hostname
        0x41 => &[N, N, N],
        // sasl-outcome: code additional-data
        0x44 => &[N, N],
        _ => return None,
    })
}

pub(super) fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Length of the encoded value at the start of `bytes`.
/// `Err(true)`: more bytes are needed; `Err(false)`: not a valid encoding.
pub(super) fn value_len(bytes: &[u8]) -> Result<usize, bool> {
    let need = |n: usize| if bytes.len() >= n { Ok(n) } else { Err(true) };
    let Some(&constructor) = bytes.first() else {
        return Err(true);
    };
    let fixed = match constructor {
        0x00 => {
            let descriptor = value_len(&bytes[1..])?;
            let value = value_len(&bytes[1 + descriptor..])?;
            return Ok(1 + descriptor + value);
        }
        0x40..=0x45 => 0,
        0x50..=0x56 => 1,
        0x60 | 0x61 => 2,
        0x70..=0x74 => 4,
        0x80..=0x84 => 8,
        0x94 | 0x98 => 16,
        0xa0 | 0xa1 | 0xa3 | 0xc0 | 0xc1 | 0xe0 => {
            let len = *bytes.get(1).ok_or(true)? as usize;
            return need(2 + len);
        }
        0xb0 | 0xb1 | 0xb3 | 0xd0 | 0xd1 | 0xf0 => {
            let len = u32_at(bytes, 1).ok_or(true)?;
            return need(5usize.checked_add(len).ok_or(false)?);
        }
        _ => return Err(false),
    };
    need(1 + fixed)
}

/// The descriptor code of a described value starting at `bytes[0] == 0x00`, and the offset of
/// its value.
pub(super) fn descriptor(bytes: &[u8]) -> Option<(u64, usize)> {
    match bytes {
        [0x00, 0x53, code, ..] => Some((u64::from(*code), 3)),
        [0x00, 0x44, ..] => Some((0, 2)),
        [0x00, 0x80, rest @ ..] if rest.len() >= 8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&rest[..8]);
            Some((u64::from_be_bytes(b), 10))
        }
        _ => None,
    }
}

/// The items of a list value (`list0`, `list8`, `list32`) filling all of `bytes`.
pub(super) fn list_items(bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let (count, mut rest) = match bytes.first()? {
        0x45 if bytes.len() == 1 => return Some(Vec::new()),
        0xc0 => (*bytes.get(2)? as usize, bytes.get(3..)?),
        0xd0 => (u32_at(bytes, 5)?, bytes.get(9..)?),
        _ => return None,
    };
    let mut items = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let len = value_len(rest).ok()?;
        items.push(&rest[..len]);
        rest = &rest[len..];
    }
    rest.is_empty().then_some(items)
}

/// Re-encodes a described list of a known type with all of its fields, or `None` when `bytes`
/// is not one (the caller then keeps the original bytes).
pub(super) fn complete(bytes: &[u8], depth: usize) -> Option<Vec<u8>> {
    let (code, at) = descriptor(bytes)?;
    let fields = spec(code)?;
    let items = list_items(bytes.get(at..)?)?;
    if items.len() > fields.len() {
        return None;
    }
    let mut body = Vec::with_capacity(bytes.len() + fields.len() * 2);
    for (i, default) in fields.iter().enumerate() {
        match items.get(i) {
            Some(item) if *item != [NULL] => match (item.first(), depth < 4) {
                (Some(0x00), true) => match complete(item, depth + 1) {
                    Some(nested) => body.extend_from_slice(&nested),
                    None => body.extend_from_slice(item),
                },
                _ => body.extend_from_slice(item),
            },
            _ => body.extend_from_slice(default.unwrap_or(&[NULL])),
        }
    }
    let code = u8::try_from(code).ok()?;
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(&[0x00, 0x53, code]);
    let count = fields.len();
    if body.len() < 255 && count < 256 {
        out.extend_from_slice(&[0xc0, (body.len() + 1) as u8, count as u8]);
    } else {
        let size = u32::try_from(body.len() + 4).ok()?;
        out.push(0xd0);
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&(count as u32).to_be_bytes());
    }
    out.extend_from_slice(&body);
    Some(out)
}

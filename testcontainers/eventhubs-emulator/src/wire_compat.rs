//! Writes every outgoing performative with all of its fields, for clients that read them by
//! position.
//!
//! AMQP 1.0 (part 1 "Types", section 1.4 "Composite Type Representation") lets an encoder omit
//! trailing null fields of a composite type, and a null field means the field's default. The
//! encoder used here (fe2o3-amqp / serde_amqp) does both: it drops trailing nulls and writes
//! fields that equal their default (such as `max-frame-size` 4294967295 in `open`) as null.
//!
//! The pure-Python AMQP transport of Microsoft's `azure-eventhub` (5.x, `_pyamqp`) reads each
//! frame's fields by fixed index: a shortened `open` fails with "list index out of range", a
//! null `max-frame-size` with a `TypeError`, a `transfer` with fewer than 11 fields has its
//! payload at the wrong index, and a connection `close` error is indexed up to its `info`.
//!
//! [`CompatStream`] wraps the TCP stream handed to fe2o3's acceptor. Reads pass through. Written
//! bytes are cut into frames, and the performative at the start of each frame body is rewritten:
//! its list is padded with nulls to the full field count, null fields that have a default in
//! the specification get that default, and nested errors, sources, targets and outcomes are
//! padded the same way. Both encodings are equivalent under the specification, so clients that
//! accept short lists (the Rust SDK) see no difference. Transfer payloads (message sections)
//! are passed on unchanged, so multi-frame deliveries are unaffected; pyamqp's message header
//! and properties have defaults for every field and need no padding.
//!
//! Nothing here panics on malformed bytes: a frame or performative that cannot be parsed is
//! passed on unchanged, and after a frame header that makes no sense the rest of the stream is.
//! Buffering is bounded: at most one performative of up to [`MAX_PERFORMATIVE`] bytes is held
//! back (larger ones pass unchanged), and a write is not accepted before the previous one's
//! bytes were handed to the socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

// Named by its path so that the fuzz target `amqp_frames`, which compiles this file on its
// own through `#[path]`, finds it too (a module loaded by path looks for its children beside
// itself, not in `wire_compat/`).
#[path = "wire_compat/performative.rs"]
mod performative;

use performative::{complete, u32_at, value_len};

/// Performatives larger than this are written unchanged instead of being buffered whole.
pub(crate) const MAX_PERFORMATIVE: usize = 64 * 1024;

enum Step {
    /// This many bytes of the input were dealt with.
    Consumed(usize),
    /// The unit at the start of the input is incomplete.
    NeedMore,
}

/// The outgoing byte stream, frame by frame.
#[derive(Debug, Default)]
pub(crate) struct Rewriter {
    /// Bytes received but not yet written out (at most one frame head and performative).
    pending: Vec<u8>,
    /// Bytes of the current frame's body still to pass on unchanged.
    passthrough: usize,
    /// Set after a frame header that makes no sense: everything is passed on unchanged.
    disabled: bool,
}

impl Rewriter {
    /// Takes `input` and appends what is to be written to `out`.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut input = input;
        if self.pending.is_empty() {
            // Fast path: whole units straight from the input, without copying to `pending`.
            let used = self.process(input, out);
            input = &input[used..];
        }
        if input.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(input);
        let used = self.process(&pending, out);
        pending.drain(..used);
        self.pending = pending;
    }

    fn process(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> usize {
        let mut pos = 0;
        while pos < bytes.len() {
            let rest = &bytes[pos..];
            if self.disabled {
                out.extend_from_slice(rest);
                return bytes.len();
            }
            if self.passthrough > 0 {
                let n = self.passthrough.min(rest.len());
                out.extend_from_slice(&rest[..n]);
                self.passthrough -= n;
                pos += n;
                continue;
            }
            match self.step(rest, out) {
                Step::Consumed(n) => pos += n,
                Step::NeedMore => break,
            }
        }
        pos
    }

    fn step(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Step {
        if bytes.len() < 8 {
            return Step::NeedMore;
        }
        if bytes.starts_with(b"AMQP") {
            out.extend_from_slice(&bytes[..8]);
            return Step::Consumed(8);
        }
        let size = u32_at(bytes, 0).unwrap_or(0);
        let head = usize::from(bytes[4]) * 4;
        if head < 8 || size < head {
            self.disabled = true;
            return Step::Consumed(0);
        }
        if bytes.len() < head {
            return Step::NeedMore;
        }
        let body_len = size - head;
        let available = &bytes[head..bytes.len().min(size)];
        let unchanged = |this: &mut Self, out: &mut Vec<u8>| {
            let n = bytes.len().min(size);
            out.extend_from_slice(&bytes[..n]);
            this.passthrough = size - n;
            Step::Consumed(n)
        };
        if body_len == 0 {
            return unchanged(self, out);
        }
        let len = match value_len(available) {
            Ok(len) => len,
            Err(true) if available.len() < body_len && available.len() < MAX_PERFORMATIVE => {
                return Step::NeedMore;
            }
            Err(_) => return unchanged(self, out),
        };
        if len > MAX_PERFORMATIVE || len > body_len {
            return unchanged(self, out);
        }
        let performative = &available[..len];
        let Some(completed) = complete(performative, 0) else {
            return unchanged(self, out);
        };
        let Ok(new_size) = u32::try_from(size - len + completed.len()) else {
            return unchanged(self, out);
        };
        out.extend_from_slice(&new_size.to_be_bytes());
        out.extend_from_slice(&bytes[4..head]);
        out.extend_from_slice(&completed);
        self.passthrough = body_len - len;
        Step::Consumed(head + len)
    }
}

/// A stream whose written AMQP frames go through a [`Rewriter`]; reads are untouched.
#[derive(Debug)]
pub(crate) struct CompatStream<S> {
    inner: S,
    rewriter: Rewriter,
    out: Vec<u8>,
    written: usize,
}

impl<S> CompatStream<S> {
    pub(crate) fn new(inner: S) -> Self {
        CompatStream {
            inner,
            rewriter: Rewriter::default(),
            out: Vec::new(),
            written: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> CompatStream<S> {
    /// Writes out what the rewriter produced.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.out.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CompatStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CompatStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Bounded: the previous write must be on the socket before the next is taken.
        ready!(this.poll_drain(cx))?;
        this.rewriter.feed(buf, &mut this.out);
        // Start writing now; what is left goes out on the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::performative::{NULL, UINT_MAX, USHORT_MAX, descriptor, list_items};
    use super::*;

    fn frame(kind: u8, channel: u16, body: &[u8]) -> Vec<u8> {
        let mut f = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&[2, kind]);
        f.extend_from_slice(&channel.to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    fn rewrite(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Rewriter::default().feed(bytes, &mut out);
        out
    }

    /// Rewrites `bytes` fed one byte at a time.
    fn rewrite_bytewise(bytes: &[u8]) -> Vec<u8> {
        let mut rewriter = Rewriter::default();
        let mut out = Vec::new();
        for b in bytes {
            rewriter.feed(std::slice::from_ref(b), &mut out);
        }
        out
    }

    fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
        serde_amqp::to_vec(value).expect("encodes")
    }

    fn fields_of(frame: &[u8]) -> Vec<Vec<u8>> {
        let body = &frame[8..];
        let (_, at) = descriptor(body).expect("described");
        let len = value_len(body).expect("complete");
        list_items(&body[at..len])
            .expect("list")
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()
    }

    #[test]
    fn open_gets_every_field_and_its_defaults() {
        use fe2o3_amqp::types::performatives::Open;
        let open = Open {
            container_id: "emulator".into(),
            hostname: None,
            max_frame_size: Default::default(),
            channel_max: Default::default(),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        let body = encode(&open);
        let mut input = b"AMQP\x00\x01\x00\x00".to_vec();
        input.extend(frame(0, 0, &body));
        let out = rewrite(&input);
        assert_eq!(out, rewrite_bytewise(&input));
        assert_eq!(&out[..8], b"AMQP\x00\x01\x00\x00");
        let frame = &out[8..];
        assert_eq!(u32_at(frame, 0), Some(frame.len()));
        let fields = fields_of(frame);
        assert_eq!(fields.len(), 10);
        assert_eq!(fields[2], UINT_MAX);
        assert_eq!(fields[3], USHORT_MAX);
        assert!(fields[4..].iter().all(|f| f == &[NULL]));
        // Still the same `open` for an AMQP decoder that accepts both forms.
        let back: Open = serde_amqp::from_slice(&frame[8..]).expect("decodes");
        assert_eq!(back.container_id, "emulator");
        assert_eq!(back.max_frame_size.0, u32::MAX);
        assert_eq!(encode(&back), body);
    }

    #[test]
    fn transfer_is_padded_and_its_payload_kept() {
        use fe2o3_amqp::types::performatives::Transfer;
        let transfer = Transfer {
            handle: 1.into(),
            delivery_id: Some(7),
            delivery_tag: Some(vec![1, 2, 3, 4].into()),
            message_format: Some(0),
            settled: Some(true),
            more: false,
            rcv_settle_mode: None,
            state: None,
            resume: false,
            aborted: false,
            batchable: false,
        };
        let mut body = encode(&transfer);
        let payload = [0x00, 0x53, 0x75, 0xa0, 3, b'a', b'b', b'c'];
        body.extend_from_slice(&payload);
        // Two frames back to back, the second on another channel.
        let mut input = frame(0, 3, &body);
        input.extend(frame(0, 4, &body));
        let out = rewrite(&input);
        assert_eq!(out, rewrite_bytewise(&input));
        let first_len = u32_at(&out, 0).unwrap();
        let (first, second) = out.split_at(first_len);
        assert_eq!(first[6..8], [0, 3]);
        assert_eq!(second[6..8], [0, 4]);
        assert_eq!(u32_at(second, 0), Some(second.len()));
        for f in [first, second] {
            assert_eq!(fields_of(f).len(), 11);
            assert!(f.ends_with(&payload));
            let back: Transfer = serde_amqp::from_slice(&f[8..f.len() - payload.len()]).unwrap();
            assert_eq!(back.delivery_id, Some(7));
            assert_eq!(back.settled, Some(true));
        }
    }

    #[test]
    fn nested_errors_sources_and_targets_are_padded() {
        use fe2o3_amqp::types::definitions::{AmqpError, Error};
        use fe2o3_amqp::types::performatives::{Close, Detach};
        let close = Close {
            error: Some(Error::new(AmqpError::NotFound, None, None)),
        };
        let out = rewrite(&frame(0, 0, &encode(&close)));
        let fields = fields_of(&out);
        assert_eq!(fields.len(), 1);
        let (code, at) = descriptor(&fields[0]).unwrap();
        assert_eq!(code, 0x1d);
        assert_eq!(list_items(&fields[0][at..]).unwrap().len(), 3);

        let detach = Detach {
            handle: 0.into(),
            closed: true,
            error: None,
        };
        let out = rewrite(&frame(0, 0, &encode(&detach)));
        assert_eq!(fields_of(&out), [vec![0x43], vec![0x41], vec![NULL]]);
        let back: Detach = serde_amqp::from_slice(&out[8..]).unwrap();
        assert!(back.closed);
    }

    #[test]
    fn attach_source_and_target() {
        use fe2o3_amqp::types::definitions::{ReceiverSettleMode, Role, SenderSettleMode};
        use fe2o3_amqp::types::messaging::{Source, Target};
        use fe2o3_amqp::types::performatives::Attach;
        let attach = Attach {
            name: "link".into(),
            handle: 2.into(),
            role: Role::Sender,
            snd_settle_mode: SenderSettleMode::Mixed,
            rcv_settle_mode: ReceiverSettleMode::First,
            source: Some(Box::new(Source::builder().address("hub/x").build())),
            target: Some(Box::new(Target::builder().address("client").build().into())),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: Some(0),
            max_message_size: Some(1024),
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        let out = rewrite(&frame(0, 1, &encode(&attach)));
        let fields = fields_of(&out);
        assert_eq!(fields.len(), 14);
        let (code, at) = descriptor(&fields[5]).unwrap();
        assert_eq!(code, 0x28);
        assert_eq!(list_items(&fields[5][at..]).unwrap().len(), 11);
        let (code, at) = descriptor(&fields[6]).unwrap();
        assert_eq!(code, 0x29);
        assert_eq!(list_items(&fields[6][at..]).unwrap().len(), 7);
        let back: Attach = serde_amqp::from_slice(&out[8..]).unwrap();
        assert_eq!(back.max_message_size, Some(1024));
        assert_eq!(
            back.source.and_then(|s| s.address),
            Some("hub/x".to_string())
        );
    }

    #[test]
    fn heartbeats_unknown_and_malformed_bytes_pass_unchanged() {
        // Empty frame (heartbeat).
        let heartbeat = [0, 0, 0, 8, 2, 0, 0, 0];
        assert_eq!(rewrite(&heartbeat), heartbeat);
        // Unknown descriptor.
        let unknown = frame(0, 0, &[0x00, 0x53, 0x99, 0xc0, 0x01, 0x00]);
        assert_eq!(rewrite(&unknown), unknown);
        // A list whose items do not fill it.
        let bad = frame(0, 0, &[0x00, 0x53, 0x10, 0xc0, 0x03, 0x02, 0x40]);
        assert_eq!(rewrite(&bad), bad);
        // Nonsense frame header: everything after passes unchanged.
        let junk = [0, 0, 0, 3, 0, 0, 9, 9, 1, 2, 3, 0x00, 0x53, 0x10];
        assert_eq!(rewrite(&junk), junk);
        assert_eq!(rewrite_bytewise(&junk), junk);
        // Truncated values never panic.
        for n in 0..20 {
            let _ = value_len(&[0x00, 0x80, 0xd0, 0xff, 0xff, 0xff, 0xff][..n.min(7)]);
            let _ = complete(&[0x00, 0x53, 0x10, 0xd0, 0, 0, 0, 9][..n.min(8)], 0);
        }
    }

    #[test]
    fn large_performatives_pass_unchanged() {
        let mut body = vec![0x00, 0x53, 0x10, 0xd0];
        let n = MAX_PERFORMATIVE + 10;
        body.extend_from_slice(&((n + 4) as u32).to_be_bytes());
        body.extend_from_slice(&1u32.to_be_bytes());
        body.push(0xb1);
        body.extend_from_slice(&((n - 5) as u32).to_be_bytes());
        body.extend(std::iter::repeat_n(b'x', n - 5));
        let f = frame(0, 0, &body);
        assert_eq!(rewrite(&f), f);
        let mut rewriter = Rewriter::default();
        let mut out = Vec::new();
        for chunk in f.chunks(1000) {
            rewriter.feed(chunk, &mut out);
            assert!(rewriter.pending.len() < MAX_PERFORMATIVE + 2000);
        }
        assert_eq!(out, f);
    }
}

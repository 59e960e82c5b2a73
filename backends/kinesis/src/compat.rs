//! TEMPORARY: what core is landing (`tributary::envelope`),
//! until it is on main. Removed on rebase.
#![allow(dead_code, missing_docs)]

pub mod envelope {
    use bytes::{BufMut, Bytes, BytesMut};
    use std::collections::HashMap;
    use tributary::Headers;
    pub const ENVELOPE: &str = "tributary-envelope";
    #[derive(Debug, Clone, Copy)]
    pub struct AttributeRules;
    impl AttributeRules {
        pub const fn new(_: usize, _: usize, _: usize, _: &'static [&'static str]) -> Self {
            AttributeRules
        }
    }
    pub struct EncodedHeaders {
        pub body: Bytes,
    }
    pub fn encode_headers(
        headers: &Headers,
        payload: &Bytes,
        _: &AttributeRules,
    ) -> EncodedHeaders {
        let mut block = BytesMut::new();
        block.put_u32(headers.len() as u32);
        for (name, value) in headers.iter() {
            block.put_u32(name.len() as u32);
            block.put_slice(name.as_bytes());
            block.put_u32(value.len() as u32);
            block.put_slice(value);
        }
        block.put_slice(payload);
        EncodedHeaders {
            body: block.freeze(),
        }
    }
    pub struct DecodedHeaders {
        pub headers: Headers,
        pub payload: Bytes,
    }
    pub fn decode_headers(
        body: Bytes,
        _: HashMap<String, String>,
    ) -> Result<DecodedHeaders, String> {
        struct R<'a> {
            body: &'a Bytes,
            at: usize,
        }
        impl R<'_> {
            fn take(&mut self, n: usize) -> Result<Bytes, String> {
                let end = self
                    .at
                    .checked_add(n)
                    .filter(|&e| e <= self.body.len())
                    .ok_or("truncated")?;
                let out = self.body.slice(self.at..end);
                self.at = end;
                Ok(out)
            }
            fn len(&mut self) -> Result<usize, String> {
                let b = self.take(4)?;
                Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            }
        }
        let mut r = R { body: &body, at: 0 };
        let count = r.len()?;
        let mut headers = Headers::default();
        for _ in 0..count {
            let name_len = r.len()?;
            let name = r.take(name_len)?;
            let name = std::str::from_utf8(&name)
                .map_err(|_| "header name is not UTF-8")?
                .to_owned();
            let value_len = r.len()?;
            headers.append(name, r.take(value_len)?);
        }
        let payload = body.slice(r.at..);
        Ok(DecodedHeaders { headers, payload })
    }
}

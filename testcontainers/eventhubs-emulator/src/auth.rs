//! Shared access signature checks for CBS `put-token`.
//!
//! A SAS token is `SharedAccessSignature sr=<url-encoded resource>&sig=<url-encoded base64
//! HMAC-SHA256>&se=<unix expiry>&skn=<key name>`; the signature covers the `sr` value exactly
//! as written in the token, a newline and the `se` value.

use std::collections::BTreeMap;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Why a token was refused; the text goes into the CBS reply's status description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused(pub(crate) String);

/// Checks a `servicebus.windows.net:sastoken` for `audience` against `keys` at `now` (unix
/// seconds). Returns the token's expiry.
pub(crate) fn verify_sas(
    token: &str,
    audience: &str,
    keys: &BTreeMap<String, String>,
    now: i64,
) -> Result<i64, Refused> {
    let body = token
        .trim()
        .strip_prefix("SharedAccessSignature ")
        .ok_or_else(|| Refused("not a SharedAccessSignature token".into()))?;
    let mut sr = None;
    let mut sig = None;
    let mut se = None;
    let mut skn = None;
    for field in body.split('&') {
        let (name, value) = field.split_once('=').unwrap_or((field, ""));
        match name {
            "sr" => sr = Some(value),
            "sig" => sig = Some(value),
            "se" => se = Some(value),
            "skn" => skn = Some(value),
            _ => {}
        }
    }
    let (Some(sr), Some(sig), Some(se), Some(skn)) = (sr, sig, se, skn) else {
        return Err(Refused("token lacks one of sr, sig, se, skn".into()));
    };
    let key_name = percent_decode(skn).ok_or_else(|| Refused("bad skn encoding".into()))?;
    let key = keys
        .get(&key_name)
        .ok_or_else(|| Refused(format!("unknown shared access key name {key_name:?}")))?;
    let expiry: i64 = se
        .parse()
        .map_err(|_| Refused(format!("expiry {se:?} is not a number")))?;
    let signature = percent_decode(sig)
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .ok_or_else(|| Refused("signature is not url-encoded base64".into()))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
        .map_err(|_| Refused("unusable key".into()))?;
    mac.update(format!("{sr}\n{se}").as_bytes());
    if mac.verify_slice(&signature).is_err() {
        return Err(Refused("invalid signature".into()));
    }
    if expiry <= now {
        return Err(Refused(format!("token expired at {expiry} (now {now})")));
    }
    let resource = percent_decode(sr).ok_or_else(|| Refused("bad sr encoding".into()))?;
    if !covers(&resource, audience) {
        return Err(Refused(format!(
            "token is for {resource:?}, which does not cover {audience:?}"
        )));
    }
    Ok(expiry)
}

/// `true` when a token for `resource` may be used for `audience`: same path, or a parent of it.
/// Schemes and host names are ignored because clients of an emulator name it arbitrarily
/// (`sb://localhost`, `amqps://ns.servicebus.windows.net`).
pub(crate) fn covers(resource: &str, audience: &str) -> bool {
    let r = path_segments(resource);
    let a = path_segments(audience);
    r.len() <= a.len()
        && r.iter()
            .zip(a.iter())
            .all(|(x, y)| x.eq_ignore_ascii_case(y))
}

/// The path of an address, without scheme and host, split at `/`.
pub(crate) fn path_segments(address: &str) -> Vec<&str> {
    let path = match address.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map(|(_, p)| p).unwrap_or(""),
        None => address,
    };
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// Decodes `%XX` escapes and `+` (form encoding, which the Python client uses).
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Signs a SAS token the way the Azure SDKs do; for tests and for the documentation.
pub fn sign_sas(resource: &str, key_name: &str, key: &str, expiry: i64) -> String {
    let sr = percent_encode(resource).to_lowercase();
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{sr}\n{expiry}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!(
        "SharedAccessSignature sr={sr}&sig={}&se={expiry}&skn={}",
        percent_encode(&sig),
        percent_encode(key_name)
    )
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> BTreeMap<String, String> {
        BTreeMap::from([("root".to_string(), "secret".to_string())])
    }

    #[test]
    fn good_token_passes_and_covers_children() {
        let token = sign_sas("amqps://ns.example/hub", "root", "secret", 2_000);
        assert_eq!(
            verify_sas(&token, "amqps://localhost/hub/Partitions/1", &keys(), 1_000),
            Ok(2_000)
        );
    }

    #[test]
    fn bad_tokens_are_refused() {
        let token = sign_sas("amqps://ns.example/hub", "root", "wrong", 2_000);
        assert!(verify_sas(&token, "amqps://ns.example/hub", &keys(), 1_000).is_err());
        let token = sign_sas("amqps://ns.example/hub", "root", "secret", 2_000);
        assert!(verify_sas(&token, "amqps://ns.example/hub", &keys(), 3_000).is_err());
        assert!(verify_sas(&token, "amqps://ns.example/other", &keys(), 1_000).is_err());
        let token = sign_sas("amqps://ns.example/hub", "nobody", "secret", 2_000);
        assert!(verify_sas(&token, "amqps://ns.example/hub", &keys(), 1_000).is_err());
        for junk in [
            "",
            "SharedAccessSignature ",
            "SharedAccessSignature sr=%zz&sig=&se=x&skn=root",
        ] {
            assert!(verify_sas(junk, "amqps://ns.example/hub", &keys(), 1_000).is_err());
        }
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%2Fb+c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(
            path_segments("amqps://h/hub/Partitions/0"),
            ["hub", "Partitions", "0"]
        );
        assert_eq!(path_segments("sb://h"), Vec::<&str>::new());
        assert!(covers("sb://h/", "amqps://x/hub"));
    }
}

//! Backend URLs and their options (core registry, local backend options): never a panic, and
//! the password component never survives redaction.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary::local::LocalConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(url) = tributary::parse_url(text) else {
        return;
    };
    // The password component never survives redaction (the same text elsewhere in the URL,
    // say in its path, is not the password component and stays).
    let shown = tributary::redact(&url);
    if let Ok(again) = tributary::Url::parse(&shown) {
        assert!(
            matches!(again.password(), None | Some("***")),
            "password in {shown}"
        );
    }
    if matches!(url.scheme(), "file" | "memory") {
        let _ = LocalConfig::from_url(&url);
    }
    let _ = tributary::UrlOptions::new(&url);
});

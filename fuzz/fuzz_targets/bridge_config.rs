//! The bridge's configuration file, TOML and YAML: never a panic, whatever the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary_bridge::config::{Format, parse_as};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let env = |name: &str| (name.len() % 2 == 0).then(|| format!("value-of-{name}"));
    let format = if first % 2 == 0 {
        Format::Toml
    } else {
        Format::Yaml
    };
    let _ = parse_as(format, text, &env);
});

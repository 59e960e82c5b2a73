//! The Event Hubs emulator's SAS token check (its own source file, compiled in here): any
//! token is refused or accepted without a panic, a token it signed itself is accepted, and a
//! changed signature is refused.
#![no_main]

#[allow(dead_code)]
#[path = "../../testcontainers/eventhubs-emulator/src/auth.rs"]
mod auth;

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut keys = BTreeMap::new();
    keys.insert(
        "RootManageSharedAccessKey".to_owned(),
        "c2VjcmV0".to_owned(),
    );
    let audience = "amqp://localhost/hub";
    let _ = auth::verify_sas(&text, audience, &keys, 1_000);

    let resource: String = text.chars().filter(|c| !c.is_control()).take(40).collect();
    let resource = format!("sb://localhost/{resource}");
    let token = auth::sign_sas(&resource, "RootManageSharedAccessKey", "c2VjcmV0", 5_000);
    if auth::covers(&resource, &resource) {
        assert!(
            auth::verify_sas(&token, &resource, &keys, 1_000).is_ok(),
            "{token}"
        );
    }
    let forged = token.replacen("sig=", "sig=A", 1);
    assert!(
        auth::verify_sas(&forged, &resource, &keys, 1_000).is_err(),
        "{forged}"
    );
});

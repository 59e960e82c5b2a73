//! Event Hubs connection strings (`Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…`):
//! what tributary reads from them, and the string handed on to the SDK.

use std::collections::HashMap;

use tributary::{Error, Result};

/// A connection string as the SDK takes it, and what tributary reads from it.
#[derive(Debug)]
pub(super) struct ParsedConnection {
    pub namespace: String,
    /// The endpoint's host and port as written.
    pub netloc: String,
    pub host_port: String,
    pub entity_path: Option<String>,
    pub development_emulator: bool,
    /// Without the keys the SDK does not know (it ignores them, but rejects nothing).
    pub for_sdk: String,
}

impl ParsedConnection {
    pub(super) fn parse(text: &str) -> Result<ParsedConnection> {
        let mut fields: HashMap<String, String> = HashMap::new();
        let mut kept = Vec::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').ok_or_else(|| {
                Error::config("a part without `=` (expected Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…)")
            })?;
            let lower = name.trim().to_ascii_lowercase();
            if lower != "usedevelopmentemulator" {
                kept.push(part.to_string());
            }
            fields.insert(lower, value.trim().to_string());
        }
        if fields.contains_key("hostname") {
            return Err(Error::unsupported(
                "this is an IoT Hub connection string (HostName=…azure-devices.net); tributary reads IoT Hub telemetry through the hub's Event Hub-compatible endpoint: use the connection string the portal shows under Built-in endpoints (Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…;EntityPath=…), or `az iot hub connection-string show --default-eventhub`",
            ));
        }
        let endpoint = fields
            .get("endpoint")
            .ok_or_else(|| Error::config("no Endpoint=sb://NAMESPACE.servicebus.windows.net/"))?;
        let host_port = endpoint
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(endpoint)
            .trim_end_matches('/')
            .to_string();
        let netloc = host_port.clone();
        let namespace = host_port
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map(|(host, _)| host.to_string())
            .unwrap_or_else(|| host_port.clone());
        if !fields.contains_key("sharedaccesskey") && !fields.contains_key("sharedaccesssignature")
        {
            return Err(Error::config(
                "neither SharedAccessKey nor SharedAccessSignature (for Microsoft Entra ID, leave the connection string out)",
            ));
        }
        let development_emulator = fields
            .get("usedevelopmentemulator")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let host_port = if development_emulator && !host_port.contains(':') {
            format!("{host_port}:5672")
        } else {
            host_port
        };
        let for_sdk = if development_emulator {
            // The SDK builds audiences from the endpoint's host; the port is only where the
            // socket goes (the custom endpoint).
            kept.iter()
                .map(|part| {
                    if part.to_ascii_lowercase().starts_with("endpoint=") {
                        format!("Endpoint=sb://{namespace}/")
                    } else {
                        part.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(";")
        } else {
            kept.join(";")
        };
        Ok(ParsedConnection {
            namespace,
            netloc,
            host_port,
            entity_path: fields.get("entitypath").cloned().filter(|s| !s.is_empty()),
            development_emulator,
            for_sdk,
        })
    }
}

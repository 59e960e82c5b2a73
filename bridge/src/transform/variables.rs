//! What an expression sees: the event and where it was read, as the CEL variables of the
//! module's table.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use cel::{Context, Value};
use tributary::Event;

use super::{Origin, Transform, budget, guard};

impl Transform {
    /// The variables for one event (`payload` parsed only when an expression reads it).
    pub(super) fn context(&self, origin: &Origin<'_>, event: &Event) -> Context<'static, 'static> {
        let mut context = Context::with_env(self.env.clone());
        // The name cannot be written in an expression, so it is never taken.
        let _ = context.add_function(guard::BUDGET_FUNCTION, budget::charge);
        context.add_variable_from_value(
            "key",
            event.key.as_ref().map_or(Value::Null, bytes_or_string),
        );
        let mut headers: HashMap<String, Value> = HashMap::with_capacity(event.headers.len());
        for (name, value) in event.headers.iter() {
            headers.insert(name.to_string(), bytes_or_string(value));
        }
        context.add_variable_from_value("headers", headers);
        let timestamp = event
            .timestamp
            .and_then(|t| chrono::DateTime::from_timestamp_millis(t.as_millis()))
            .map_or(Value::Null, |t| Value::Timestamp(t.fixed_offset()));
        context.add_variable_from_value("timestamp", timestamp);
        let payload = if self.reads_payload {
            serde_json::from_slice::<serde_json::Value>(&event.payload)
                .ok()
                .and_then(|json| cel::to_value(json).ok())
                .unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        context.add_variable_from_value("payload", payload);
        context.add_variable_from_value("raw", Value::Bytes(Arc::new(event.payload.to_vec())));
        let optional = |s: Option<&str>| s.map_or(Value::Null, Value::from);
        let source: HashMap<String, Value> = [
            ("backend".to_string(), Value::from(origin.backend)),
            ("stream".to_string(), Value::from(origin.stream)),
            ("partition".to_string(), optional(origin.partition)),
            ("position".to_string(), optional(origin.position)),
        ]
        .into_iter()
        .collect();
        context.add_variable_from_value("source", source);
        context
    }
}

fn bytes_or_string(b: &Bytes) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::from(s),
        Err(_) => Value::Bytes(Arc::new(b.to_vec())),
    }
}

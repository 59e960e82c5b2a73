//! `$management`: READ of hub (`com.microsoft:eventhub`) and partition
//! (`com.microsoft:partition`) properties.

use fe2o3_amqp::types::primitives::{Array, Timestamp, Value};

use super::Shared;
use super::connection::ConnState;
use super::requests::app_string;
use crate::auth::verify_sas;
use crate::store::{AmqpMessage, Hub, now_millis};

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::String(k.to_string()), v))
            .collect(),
    )
}

pub(super) fn read(
    request: &AmqpMessage,
    shared: &Shared,
    conn: &ConnState,
) -> (i32, String, Value) {
    let operation = app_string(request, "operation").unwrap_or_default();
    if operation != "READ" {
        return (
            501,
            format!("unsupported $management operation {operation:?}"),
            Value::Null,
        );
    }
    let Some(name) = app_string(request, "name") else {
        return (400, "READ without an entity name".into(), Value::Null);
    };
    if !shared.keys.is_empty() {
        let audience = format!("{name}/$management");
        let by_token = app_string(request, "security_token").is_some_and(|token| {
            verify_sas(&token, &audience, &shared.keys, now_millis() / 1000).is_ok()
        });
        if !by_token && !conn.authorized(shared, &audience) {
            return (401, format!("Unauthorized access to '{name}'"), Value::Null);
        }
    }
    let hub = match shared.namespace.hub(&name) {
        Ok(hub) => hub,
        Err(e) => return (404, e.0, Value::Null),
    };
    match app_string(request, "type").as_deref() {
        Some("com.microsoft:eventhub") => (200, "OK".into(), hub_properties(&hub)),
        Some("com.microsoft:partition") => {
            let id = app_string(request, "partition").unwrap_or_default();
            match hub.partition(&id) {
                Ok(partition) => {
                    let info = partition.info();
                    (
                        200,
                        "OK".into(),
                        map(vec![
                            ("name", Value::String(hub.name.clone())),
                            ("partition", Value::String(id)),
                            ("type", Value::String("com.microsoft:partition".into())),
                            ("begin_sequence_number", Value::Long(info.begin_sequence)),
                            (
                                "last_enqueued_sequence_number",
                                Value::Long(info.last_sequence),
                            ),
                            (
                                "last_enqueued_offset",
                                Value::String(info.last_offset.to_string()),
                            ),
                            (
                                "last_enqueued_time_utc",
                                Value::Timestamp(Timestamp::from_milliseconds(
                                    info.last_enqueued_ms,
                                )),
                            ),
                            ("is_partition_empty", Value::Bool(info.empty)),
                            ("last_enqueued_sequence_number_epoch", Value::Long(0)),
                        ]),
                    )
                }
                Err(e) => (404, e.0, Value::Null),
            }
        }
        other => (
            400,
            format!("unsupported entity type {other:?}"),
            Value::Null,
        ),
    }
}

fn hub_properties(hub: &Hub) -> Value {
    let ids: Vec<Value> = (0..hub.partitions.len())
        .map(|i| Value::String(i.to_string()))
        .collect();
    map(vec![
        ("name", Value::String(hub.name.clone())),
        ("type", Value::String("com.microsoft:eventhub".into())),
        (
            "created_at",
            Value::Timestamp(Timestamp::from_milliseconds(hub.created_ms)),
        ),
        ("partition_count", Value::Int(hub.partitions.len() as i32)),
        ("partition_ids", Value::Array(Array::from(ids))),
    ])
}

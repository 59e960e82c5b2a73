//! The file's shape, checked before the typed structures are filled: `serde` stops at the
//! first unknown key or wrong type, while an operator wants every one of them in one run. The
//! walk reports each with its path (and the key that was probably meant), and removes it, so
//! that the typed pass and every check after it still run on the rest.

use serde_json::{Map, Value};
use tributary::backend::closest_name;

/// What a value must be.
enum Shape {
    String,
    Integer,
    Number,
    Table(&'static [(&'static str, Shape)]),
    ListOf(&'static Shape),
    /// Any keys, each value of the given shape.
    MapOf(&'static Shape),
}

const STRING: Shape = Shape::String;

const DAEMON: &[(&str, Shape)] = &[
    ("listen", Shape::String),
    ("shutdown_timeout", Shape::String),
    ("log_format", Shape::String),
    ("tracing", Shape::Table(TRACING)),
];
const TRACING: &[(&str, Shape)] = &[
    ("endpoint", Shape::String),
    ("protocol", Shape::String),
    ("service_name", Shape::String),
    ("sampling", Shape::Number),
    ("timeout", Shape::String),
    ("headers", Shape::MapOf(&STRING)),
];
const SOURCE: &[(&str, Shape)] = &[
    ("url", Shape::String),
    ("stream", Shape::String),
    ("group", Shape::String),
    ("start", Shape::String),
    ("cluster", Shape::String),
];
const SINK: &[(&str, Shape)] = &[
    ("url", Shape::String),
    ("stream", Shape::String),
    ("cluster", Shape::String),
];
const BATCH: &[(&str, Shape)] = &[
    ("max_events", Shape::Integer),
    ("max_bytes", Shape::String),
    ("linger", Shape::String),
];
const RETRY: &[(&str, Shape)] = &[
    ("attempts", Shape::Integer),
    ("backoff", Shape::String),
    ("max_backoff", Shape::String),
    ("jitter", Shape::Number),
];
const TRANSFORM: &[(&str, Shape)] = &[
    ("stream", Shape::String),
    ("key", Shape::String),
    ("set_headers", Shape::MapOf(&STRING)),
    ("remove_headers", Shape::ListOf(&STRING)),
];
const BUDGET: &[(&str, Shape)] = &[("steps", Shape::Integer), ("time", Shape::String)];
const ROUTE_FIELDS: &[(&str, Shape)] = &[
    ("name", Shape::String),
    ("source", Shape::Table(SOURCE)),
    ("sink", Shape::Table(SINK)),
    ("batch", Shape::Table(BATCH)),
    ("in_flight", Shape::Integer),
    ("retry", Shape::Table(RETRY)),
    ("dead_letter", Shape::Table(SINK)),
    ("key", Shape::String),
    ("lineage", Shape::String),
    ("filter", Shape::String),
    ("transform", Shape::Table(TRANSFORM)),
    ("expression_budget", Shape::Table(BUDGET)),
    ("cloudevents", Shape::String),
];
const ROUTE: Shape = Shape::Table(ROUTE_FIELDS);
const FILE: &[(&str, Shape)] = &[
    ("daemon", Shape::Table(DAEMON)),
    ("route", Shape::ListOf(&ROUTE)),
];

/// Checks `document` against the file's shape, removing what does not fit; one message per
/// problem, `` `path`: … ``.
pub(super) fn check(document: &mut Value) -> Vec<String> {
    let mut problems = Vec::new();
    match document {
        Value::Object(table) => check_table(".", table, FILE, &mut problems),
        other => problems.push(format!(
            "the file must be a table of sections, not {}",
            describe(other)
        )),
    }
    problems
}

fn check_table(
    at: &str,
    table: &mut Map<String, Value>,
    fields: &'static [(&'static str, Shape)],
    problems: &mut Vec<String>,
) {
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        let path = if at == "." {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        match fields.iter().find(|(name, _)| *name == key) {
            None => {
                let known: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
                let hint = closest_name(&key, known.iter().copied())
                    .map(|k| format!(" (did you mean `{k}`?)"))
                    .unwrap_or_default();
                problems.push(format!(
                    "`{path}`: unknown key{hint}; known here: {}",
                    known.join(", ")
                ));
                table.remove(&key);
            }
            Some((_, shape)) => {
                let fits = table
                    .get_mut(&key)
                    .is_some_and(|value| check_value(&path, value, shape, problems));
                if !fits {
                    table.remove(&key);
                }
            }
        }
    }
}

/// Whether `value` has the shape (after removing what inside it does not).
fn check_value(path: &str, value: &mut Value, shape: &Shape, problems: &mut Vec<String>) -> bool {
    let wanted = match (shape, &mut *value) {
        // An absent optional value, as YAML writes it.
        (_, Value::Null) if !matches!(shape, Shape::Table(_) | Shape::ListOf(_)) => return true,
        (Shape::String, Value::String(_)) => return true,
        (Shape::Integer, Value::Number(n)) if n.is_u64() => return true,
        (Shape::Number, Value::Number(_)) => return true,
        (Shape::Table(fields), Value::Object(table)) => {
            check_table(path, table, fields, problems);
            return true;
        }
        (Shape::ListOf(item), Value::Array(items)) => {
            let mut i = 0;
            items.retain_mut(|value| {
                let fits = check_value(&format!("{path}[{i}]"), value, item, problems);
                i += 1;
                fits
            });
            return true;
        }
        (Shape::MapOf(item), Value::Object(table)) => {
            let keys: Vec<String> = table.keys().cloned().collect();
            for key in keys {
                let fits = table.get_mut(&key).is_some_and(|value| {
                    check_value(&format!("{path}.{key}"), value, item, problems)
                });
                if !fits {
                    table.remove(&key);
                }
            }
            return true;
        }
        (Shape::String, _) => "a string",
        (Shape::Integer, _) => "a non-negative integer",
        (Shape::Number, _) => "a number",
        (Shape::Table(_), _) => "a table (`{ key = value, … }`)",
        (Shape::ListOf(_), _) => "a list",
        (Shape::MapOf(_), _) => "a table of names to values",
    };
    problems.push(format!(
        "`{path}`: expected {wanted}, found {}",
        describe(value)
    ));
    false
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.len() <= 40 => format!("the string \"{s}\""),
        Value::String(s) => format!("a string of {} bytes", s.len()),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a table".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unknown_key_and_wrong_type_is_reported_and_removed() {
        let mut document = serde_json::json!({
            "daemon": { "listen": 9464, "colour": "blue" },
            "route": [{
                "name": "a",
                "grup": "g",
                "in_flight": "many",
                "source": { "url": "memory://", "stream": "s", "strat": "x" },
                "batch": { "max": 1, "linger": 5 },
                "transform": { "set_headers": { "a": "'x'", "b": 1 } },
            }],
        });
        let problems = check(&mut document).join("\n");
        for needle in [
            "`daemon.listen`: expected a string, found the number 9464",
            "`daemon.colour`: unknown key",
            "`route[0].grup`: unknown key; known here: name, source",
            "`route[0].in_flight`: expected a non-negative integer, found the string \"many\"",
            "`route[0].source.strat`: unknown key (did you mean `start`?)",
            "`route[0].batch.max`: unknown key",
            "`route[0].batch.linger`: expected a string",
            "`route[0].transform.set_headers.b`: expected a string",
        ] {
            assert!(
                problems.contains(needle),
                "missing {needle} in:\n{problems}"
            );
        }
        assert_eq!(
            document,
            serde_json::json!({
                "daemon": {},
                "route": [{
                    "name": "a",
                    "source": { "url": "memory://", "stream": "s" },
                    "batch": {},
                    "transform": { "set_headers": { "a": "'x'" } },
                }],
            })
        );
    }
}

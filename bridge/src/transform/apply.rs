//! Running a compiled transform on one event: the filter, then the new stream, key and headers,
//! each result checked for the type its field takes.

use bytes::Bytes;
use cel::{Context, Value};
use tributary::{Error, Event, Result};

use super::guard::quoted;
use super::{Expression, Origin, Outcome, Transform, budget, guard, one_line};

impl Transform {
    /// Runs the filter and transform on one event, within the [`Budget`](super::Budget). `Err` (kind
    /// `Config`) names the expression that failed and why (over budget included): the event
    /// then goes to the dead-letter sink, or stops the route.
    ///
    /// Evaluation runs on the calling thread and recurses once per level of an expression's
    /// tree: give it a large stack for deep expressions (the route evaluates on a thread with a
    /// [`STACK_BYTES`](super::STACK_BYTES) stack). A panic in the interpreter is caught and returned as an error.
    pub fn apply(&self, origin: &Origin<'_>, event: Event) -> Result<Outcome> {
        let run = std::panic::AssertUnwindSafe(|| {
            budget::within(self.budget, || self.apply_unguarded(origin, event))
        });
        std::panic::catch_unwind(run).unwrap_or_else(|panic| {
            Err(Error::config(format!(
                "the filter or transform failed: the CEL interpreter panicked: {}",
                guard::panic_message(&panic)
            )))
        })
    }

    fn apply_unguarded(&self, origin: &Origin<'_>, mut event: Event) -> Result<Outcome> {
        let context = self.context(origin, &event);
        if let Some(filter) = &self.filter {
            match evaluate(filter, &context)? {
                Value::Bool(true) => {}
                Value::Bool(false) => return Ok(Outcome::Drop),
                other => return Err(wrong_type(filter, &other, "a bool")),
            }
        }
        let stream = match &self.stream {
            None => None,
            Some(e) => match evaluate(e, &context)? {
                Value::Null => None,
                Value::String(s) if !s.is_empty() => Some(s.to_string()),
                other => return Err(wrong_type(e, &other, "a non-empty string or null")),
            },
        };
        let key = match &self.key {
            None => None,
            Some(e) => Some(match evaluate(e, &context)? {
                Value::Null => None,
                Value::String(s) => Some(Bytes::from(s.to_string())),
                Value::Bytes(b) => Some(Bytes::from(b.to_vec())),
                other => return Err(wrong_type(e, &other, "a string, bytes or null")),
            }),
        };
        let mut headers = Vec::with_capacity(self.set_headers.len());
        for (name, e) in &self.set_headers {
            let value = match evaluate(e, &context)? {
                Value::Null => None,
                Value::String(s) => Some(Bytes::from(s.to_string())),
                Value::Bytes(b) => Some(Bytes::from(b.to_vec())),
                Value::Int(n) => Some(Bytes::from(n.to_string())),
                Value::UInt(n) => Some(Bytes::from(n.to_string())),
                Value::Float(n) => Some(Bytes::from(n.to_string())),
                Value::Bool(b) => Some(Bytes::from(b.to_string())),
                other => {
                    return Err(wrong_type(
                        e,
                        &other,
                        "a string, bytes, number, bool or null",
                    ));
                }
            };
            headers.push((name, value));
        }
        drop(context);
        if let Some(key) = key {
            event.key = key;
        }
        for name in &self.remove_headers {
            event.headers.remove(name);
        }
        for (name, value) in headers {
            match value {
                Some(v) => event.headers.insert(name.clone(), v),
                None => {
                    event.headers.remove(name);
                }
            }
        }
        Ok(Outcome::Keep { event, stream })
    }
}

fn evaluate(e: &Expression, context: &Context<'_, '_>) -> Result<Value> {
    Value::resolve(&e.tree, context).map_err(|err| {
        Error::config(format!(
            "{} {} failed: {}",
            e.field,
            quoted(&e.source),
            one_line(&err.to_string())
        ))
    })
}

fn wrong_type(e: &Expression, value: &Value, wanted: &str) -> Error {
    Error::config(format!(
        "{} {} gave a {}, not {wanted}",
        e.field,
        quoted(&e.source),
        value.type_of()
    ))
}

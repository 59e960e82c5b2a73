//! Route filters and transforms, written in CEL (the Common Expression Language,
//! <https://github.com/google/cel-spec>), so that nobody has to learn a home-made language.
//!
//! Every expression sees the event being replicated:
//!
//! | variable | CEL type | value |
//! |---|---|---|
//! | `key` | string, bytes or null | the key; bytes when it is not UTF-8 |
//! | `headers` | map(string, string or bytes) | the last value of each header |
//! | `timestamp` | timestamp or null | the event time |
//! | `payload` | JSON value or null | the payload parsed as JSON; null when it is not JSON |
//! | `raw` | bytes | the payload as it is |
//! | `source` | map | `backend`, `stream`, `partition` (string or null), `position` (string or null) |
//!
//! A route may have a `filter` (bool: `false` drops the event, which is acked at the source)
//! and a transform: `stream` (string: the sink stream, null for the route's own), `key`
//! (string, bytes or null for none), `set_headers` (name → expression; a null result removes
//! the header) and `remove_headers`.
//!
//! ```
//! use tributary::Event;
//! use tributary_bridge::transform::{Origin, Outcome, Transform, TransformSpec};
//!
//! let transform = Transform::compile(&TransformSpec {
//!     filter: Some("payload.amount >= 100".into()),
//!     stream: Some("'orders-' + payload.region".into()),
//!     key: Some("payload.customer".into()),
//!     set_headers: vec![("tier".into(), "payload.amount > 1000 ? 'gold' : 'standard'".into())],
//!     remove_headers: vec!["debug".into()],
//! })
//! .unwrap();
//! let origin = Origin { backend: "memory", stream: "orders", partition: None, position: None };
//! let big = Event::new(r#"{"amount": 2500, "region": "eu", "customer": "c-7"}"#).with_header("debug", "1");
//! match transform.apply(&origin, big).unwrap() {
//!     Outcome::Keep { event, stream } => {
//!         assert_eq!(stream.as_deref(), Some("orders-eu"));
//!         assert_eq!(event.key.as_deref(), Some(&b"c-7"[..]));
//!         assert_eq!(event.headers.get("tier").map(|v| &v[..]), Some(&b"gold"[..]));
//!         assert!(event.headers.get("debug").is_none());
//!     }
//!     Outcome::Drop => unreachable!(),
//! }
//! let small = Event::new(r#"{"amount": 5, "region": "eu", "customer": "c-7"}"#);
//! assert!(matches!(transform.apply(&origin, small).unwrap(), Outcome::Drop));
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use cel::{Context, Env, ExecutionError, Value};
use tributary::{Error, Event, Result};

mod budget;
mod checks;
mod guard;

pub use budget::{Budget, OVER_BUDGET};
pub use guard::{MAX_EXPRESSION_BYTES, MAX_NESTING, MAX_TREE_DEPTH, STACK_BYTES};

use checks::Wanted;
use guard::quoted;

/// The expressions of one route, as written in the configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransformSpec {
    /// Keep the event when true.
    pub filter: Option<String>,
    /// The sink stream (string), or null for the route's own.
    pub stream: Option<String>,
    /// The new key: string, bytes, or null for none.
    pub key: Option<String>,
    /// Headers to set, in order: name and expression (a null result removes the header).
    pub set_headers: Vec<(String, String)>,
    /// Headers to remove (before `set_headers` is applied).
    pub remove_headers: Vec<String>,
}

impl TransformSpec {
    /// Whether the spec does nothing.
    pub fn is_empty(&self) -> bool {
        *self == TransformSpec::default()
    }
}

/// Where the event was read: visible to expressions as `source`.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// Source backend scheme.
    pub backend: &'a str,
    /// Source stream.
    pub stream: &'a str,
    /// Source partition, where it has one.
    pub partition: Option<&'a str>,
    /// Source position, where it has one.
    pub position: Option<&'a str>,
}

/// What a transform made of an event.
#[derive(Debug)]
pub enum Outcome {
    /// Replicate `event`, to `stream` when it is set, else to the route's sink stream.
    Keep {
        /// The event after the transform.
        event: Event,
        /// The sink stream chosen by the `stream` expression.
        stream: Option<String>,
    },
    /// The filter said no.
    Drop,
}

struct Expression {
    /// Where it came from in the configuration (`filter`, `transform.key`, …), for errors.
    field: String,
    source: String,
    /// The parsed tree, bounded in depth and with every comprehension charged to the budget.
    tree: cel::parser::Expression,
    wanted: Wanted,
}

/// Compiled expressions of one route; cheap to share between tasks.
pub struct Transform {
    env: Arc<Env>,
    filter: Option<Expression>,
    stream: Option<Expression>,
    key: Option<Expression>,
    set_headers: Vec<(String, Expression)>,
    remove_headers: Vec<String>,
    /// Parsing JSON costs more than everything else here: only do it when an expression reads it.
    reads_payload: bool,
    budget: Budget,
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields: Vec<(&str, String)> = self
            .expressions()
            .map(|e| (e.field.as_str(), quoted(&e.source)))
            .collect();
        f.debug_struct("Transform")
            .field("expressions", &fields)
            .field("remove_headers", &self.remove_headers)
            .field("budget", &self.budget)
            .finish()
    }
}

const VARIABLES: [&str; 6] = ["key", "headers", "timestamp", "payload", "raw", "source"];

impl Transform {
    /// Compiles every expression, with the default [`Budget`]. `Err` lists each problem as
    /// `field: message` (`transform.stream: …`): expressions too long or too deep to
    /// evaluate safely (see [`MAX_EXPRESSION_BYTES`], [`MAX_NESTING`], [`MAX_TREE_DEPTH`]),
    /// syntax errors, references to variables that do not exist, parts that fail whatever the
    /// event (`1 + "a"`, an invalid regular expression literal) and results of the wrong type
    /// (a filter `42`). Parsing runs on a thread of its own with a [`STACK_BYTES`] stack.
    pub fn compile(spec: &TransformSpec) -> std::result::Result<Transform, Vec<String>> {
        match guard::on_big_stack(|| Self::compile_here(spec)) {
            Ok(compiled) => compiled,
            Err(panic) => Err(vec![format!(
                "filter: compiling the expressions failed: {panic}"
            )]),
        }
    }

    fn compile_here(spec: &TransformSpec) -> std::result::Result<Transform, Vec<String>> {
        let env = Arc::new(Env::stdlib());
        let mut problems = Vec::new();
        let mut compile = |field: &str, source: &str, wanted: Wanted| -> Option<Expression> {
            match guard::parse(&env, source) {
                Ok(tree) => Some(Expression {
                    field: field.to_string(),
                    source: source.to_string(),
                    tree,
                    wanted,
                }),
                Err(message) => {
                    problems.push(format!("{field}: {message}"));
                    None
                }
            }
        };
        let filter = spec
            .filter
            .as_deref()
            .and_then(|s| compile("filter", s, Wanted::Bool));
        let stream = spec
            .stream
            .as_deref()
            .and_then(|s| compile("transform.stream", s, Wanted::StreamName));
        let key = spec
            .key
            .as_deref()
            .and_then(|s| compile("transform.key", s, Wanted::Key));
        let mut set_headers = Vec::new();
        let mut empty_name = false;
        for (name, source) in &spec.set_headers {
            empty_name |= name.is_empty();
            let field = format!("transform.set_headers.{name}");
            if let Some(e) = compile(&field, source, Wanted::HeaderValue) {
                set_headers.push((name.clone(), e));
            }
        }
        if empty_name {
            problems.push("transform.set_headers: a header name is empty".into());
        }
        let mut transform = Transform {
            env,
            filter,
            stream,
            key,
            set_headers,
            remove_headers: spec.remove_headers.clone(),
            reads_payload: false,
            budget: Budget::default(),
        };
        let reads_payload = transform
            .expressions()
            .any(|e| e.tree.references().has_variable("payload"));
        transform.reads_payload = reads_payload;
        // A misspelt variable would only show at the first event; evaluating each expression
        // once against an empty event finds it now. Other failures depend on the data, except
        // for the parts that do not read the event, which `checks` evaluates.
        let probe = Event::new(Bytes::new());
        let origin = Origin {
            backend: "",
            stream: "",
            partition: None,
            position: None,
        };
        let context = transform.context(&origin, &probe);
        let budget = transform.budget;
        for e in transform.expressions() {
            if let Err(ExecutionError::UndeclaredReference(name)) =
                budget::within(budget, || Value::resolve(&e.tree, &context))
            {
                problems.push(format!(
                    "{}: {} uses `{name}`, which is not defined; expressions see {}",
                    e.field,
                    quoted(&e.source),
                    VARIABLES.join(", ")
                ));
                continue;
            }
            for problem in checks::check(&e.tree, &context, e.wanted, budget) {
                problems.push(format!("{}: {} {problem}", e.field, quoted(&e.source)));
            }
        }
        drop(context);
        if problems.is_empty() {
            Ok(transform)
        } else {
            Err(problems)
        }
    }

    /// The same expressions with another evaluation budget.
    pub fn with_budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }

    /// The evaluation budget of one event.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// What the transform does, for humans: `filter, stream, key, 2 header changes`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.filter.is_some() {
            parts.push("filter".to_string());
        }
        if self.stream.is_some() {
            parts.push("stream by expression".to_string());
        }
        if self.key.is_some() {
            parts.push("key by expression".to_string());
        }
        let headers = self.set_headers.len() + self.remove_headers.len();
        if headers > 0 {
            parts.push(format!("{headers} header change(s)"));
        }
        parts.join(", ")
    }

    fn expressions(&self) -> impl Iterator<Item = &Expression> {
        self.filter
            .iter()
            .chain(&self.stream)
            .chain(&self.key)
            .chain(self.set_headers.iter().map(|(_, e)| e))
    }

    fn context(&self, origin: &Origin<'_>, event: &Event) -> Context<'static, 'static> {
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

    /// Runs the filter and transform on one event, within the [`Budget`]. `Err` (kind
    /// `Config`) names the expression that failed and why (over budget included): the event
    /// then goes to the dead-letter sink, or stops the route.
    ///
    /// Evaluation runs on the calling thread and recurses once per level of an expression's
    /// tree: give it a large stack for deep expressions (the route evaluates on a thread with a
    /// [`STACK_BYTES`] stack). A panic in the interpreter is caught and returned as an error.
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

fn bytes_or_string(b: &Bytes) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::from(s),
        Err(_) => Value::Bytes(Arc::new(b.to_vec())),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary::Timestamp;

    fn origin() -> Origin<'static> {
        Origin {
            backend: "kafka",
            stream: "orders",
            partition: Some("3"),
            position: Some("42"),
        }
    }

    fn keep(t: &Transform, e: Event) -> (Event, Option<String>) {
        match t.apply(&origin(), e).unwrap() {
            Outcome::Keep { event, stream } => (event, stream),
            Outcome::Drop => panic!("dropped"),
        }
    }

    fn spec(filter: &str) -> TransformSpec {
        TransformSpec {
            filter: Some(filter.into()),
            ..Default::default()
        }
    }

    #[test]
    fn filters_see_key_headers_timestamp_payload_and_source() {
        let event = Event::new(r#"{"n": 7, "tags": ["a", "b"]}"#)
            .with_key("k1")
            .with_header("type", "order")
            .with_timestamp(Timestamp::from_millis(1_700_000_000_000));
        for (expr, expected) in [
            ("key == 'k1'", true),
            ("headers['type'] == 'order'", true),
            ("'missing' in headers", false),
            ("payload.n > 5 && 'b' in payload.tags", true),
            ("timestamp > timestamp('2023-01-01T00:00:00Z')", true),
            ("source.stream == 'orders' && source.partition == '3'", true),
            ("size(raw) == 28", true),
            ("headers.exists(h, h.startsWith('ty'))", true),
        ] {
            let t = Transform::compile(&spec(expr)).unwrap();
            let kept = matches!(
                t.apply(&origin(), event.clone()).unwrap(),
                Outcome::Keep { .. }
            );
            assert_eq!(kept, expected, "{expr}");
        }
    }

    #[test]
    fn transforms_rewrite_stream_key_and_headers() {
        let t = Transform::compile(&TransformSpec {
            stream: Some("payload.kind == 'refund' ? 'refunds' : null".into()),
            key: Some("string(payload.user)".into()),
            set_headers: vec![
                ("kind".into(), "payload.kind".into()),
                ("big".into(), "payload.amount > 10".into()),
                ("drop-me".into(), "null".into()),
            ],
            remove_headers: vec!["secret".into()],
            ..Default::default()
        })
        .unwrap();
        let (e, stream) = keep(
            &t,
            Event::new(r#"{"kind": "refund", "user": 12, "amount": 3}"#)
                .with_key("old")
                .with_header("secret", "x")
                .with_header("drop-me", "y")
                .with_header("kept", "z"),
        );
        assert_eq!(stream.as_deref(), Some("refunds"));
        assert_eq!(e.key.as_deref(), Some(&b"12"[..]));
        let headers: Vec<(&str, &[u8])> = e.headers.iter().map(|(k, v)| (k, &v[..])).collect();
        assert_eq!(
            headers,
            [("kept", &b"z"[..]), ("kind", b"refund"), ("big", b"false")]
        );
        let (_, stream) = keep(
            &t,
            Event::new(r#"{"kind": "sale", "user": 1, "amount": 3}"#),
        );
        assert_eq!(stream, None);
    }

    #[test]
    fn a_null_key_removes_it_and_binary_keys_are_bytes() {
        let t = Transform::compile(&TransformSpec {
            key: Some("null".into()),
            filter: Some("type(key) == bytes".into()),
            ..Default::default()
        })
        .unwrap();
        let (e, _) = keep(&t, Event::new("x").with_key(vec![0xff, 0xfe]));
        assert!(e.key.is_none());
    }

    #[test]
    fn compile_errors_name_the_field_and_unknown_variables() {
        let problems = Transform::compile(&TransformSpec {
            filter: Some("paylod.n > 1".into()),
            stream: Some("'a' +".into()),
            set_headers: vec![("h".into(), "headerz['x']".into())],
            ..Default::default()
        })
        .unwrap_err();
        let all = problems.join("\n");
        assert!(
            all.contains("filter: `paylod.n > 1` uses `paylod`"),
            "{all}"
        );
        assert!(
            all.contains("transform.stream: `'a' +` is not a valid CEL"),
            "{all}"
        );
        assert!(all.contains("transform.set_headers.h"), "{all}");
        assert_eq!(problems.len(), 3, "{all}");
    }

    #[test]
    fn runtime_failures_are_errors_naming_the_expression_not_panics() {
        let t = Transform::compile(&spec("payload.amount > 10")).unwrap();
        // Not JSON: payload is null, and reading a field of null fails.
        let e = t.apply(&origin(), Event::new("not json")).unwrap_err();
        assert_eq!(e.kind(), tributary::ErrorKind::Config);
        assert!(
            e.to_string()
                .contains("filter `payload.amount > 10` failed"),
            "{e}"
        );
        let t = Transform::compile(&spec("payload.flag")).unwrap();
        let e = t
            .apply(&origin(), Event::new(r#"{"flag": "yes"}"#))
            .unwrap_err();
        assert!(e.to_string().contains("not a bool"), "{e}");
        let t = Transform::compile(&TransformSpec {
            stream: Some("payload.n".into()),
            ..Default::default()
        })
        .unwrap();
        let e = t.apply(&origin(), Event::new(r#"{"n": 42}"#)).unwrap_err();
        assert!(e.to_string().contains("transform.stream"), "{e}");
    }

    #[test]
    fn what_fails_every_event_is_refused_at_compile_time() {
        for (spec, needle) in [
            (
                spec("42"),
                "filter: `42` gives a int whatever the event, not a bool",
            ),
            (spec("'yes'"), "gives a string whatever the event"),
            (
                spec("1 + 'a'"),
                "filter: `1 + 'a'` a part of it that does not depend on the event fails",
            ),
            (
                spec("key == 'a' || 1 / 0 == 1"),
                "does not depend on the event fails",
            ),
            (
                spec("string(raw).matches('(unclosed')"),
                "regular expression `(unclosed` does not compile",
            ),
            (spec("payload.n + 1"), "gives a"),
            (
                TransformSpec {
                    stream: Some("payload.n > 1".into()),
                    ..Default::default()
                },
                "transform.stream: `payload.n > 1` gives a bool whatever the event, not a string or null",
            ),
            (
                TransformSpec {
                    key: Some("[payload.id]".into()),
                    ..Default::default()
                },
                "transform.key: `[payload.id]` gives a list",
            ),
        ] {
            let problems = Transform::compile(&spec).unwrap_err().join("\n");
            assert!(problems.contains(needle), "{needle}: {problems}");
        }
        for fine in [
            "payload.n > 1",
            "has(payload.n) ? payload.n > 1 : false",
            "string(raw).matches('^[a-z]+$')",
            "[1, 2].exists(x, x == payload.n)",
            "timestamp > timestamp('2023-01-01T00:00:00Z')",
        ] {
            Transform::compile(&spec(fine)).unwrap_or_else(|e| panic!("{fine}: {e:?}"));
        }
    }

    #[test]
    fn an_event_over_the_budget_fails_with_the_reason() {
        let six_maps = "size([1,2,3,4,5,6,7,8,9,10].map(a, [1,2,3,4,5,6,7,8,9,10].map(b, [1,2,3,4,5,6,7,8,9,10].map(c, [1,2,3,4,5,6,7,8,9,10].map(d, [1,2,3,4,5,6,7,8,9,10].map(e, [1,2,3,4,5,6,7,8,9,10].map(f, a + b + c + d + e + f))))))) > 0";
        let t = Transform::compile(&spec(six_maps)).unwrap();
        let started = std::time::Instant::now();
        let e = t.apply(&origin(), Event::new("x")).unwrap_err();
        assert!(e.to_string().contains(OVER_BUDGET), "{e}");
        println!("refused after {:?}: {e}", started.elapsed());
        // Whichever comes first, steps or time: with time to spare, the steps stop it.
        let t = t.with_budget(Budget {
            steps: 100_000,
            time: std::time::Duration::from_secs(600),
        });
        let e = t.apply(&origin(), Event::new("x")).unwrap_err();
        assert!(e.to_string().contains("100000 comprehension steps"), "{e}");
        // A budget in time stops it too, and a large enough one lets it through.
        let t = t.with_budget(Budget {
            steps: u64::MAX,
            time: std::time::Duration::from_millis(20),
        });
        let e = t.apply(&origin(), Event::new("x")).unwrap_err();
        assert!(e.to_string().contains("more than 20ms"), "{e}");
        let small = Transform::compile(&spec("[1, 2, 3].map(x, [1, 2].map(y, x * y)).size() == 3"))
            .unwrap()
            .with_budget(Budget {
                steps: 9,
                time: std::time::Duration::from_secs(10),
            });
        assert!(matches!(
            small.apply(&origin(), Event::new("x")),
            Ok(Outcome::Keep { .. })
        ));
        let e = small
            .with_budget(Budget {
                steps: 8,
                time: std::time::Duration::from_secs(10),
            })
            .apply(&origin(), Event::new("x"))
            .unwrap_err();
        assert!(e.to_string().contains(OVER_BUDGET), "{e}");
    }

    #[test]
    fn the_payload_is_not_parsed_unless_read() {
        let t = Transform::compile(&spec("key == 'a'")).unwrap();
        assert!(!t.reads_payload);
        let t = Transform::compile(&spec("has(payload.a)")).unwrap();
        assert!(t.reads_payload);
    }
}

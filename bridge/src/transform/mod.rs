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

use std::sync::Arc;

use bytes::Bytes;
use cel::{Env, ExecutionError, Value};
use tributary::Event;

mod apply;
mod budget;
mod checks;
mod guard;
mod variables;

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
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;

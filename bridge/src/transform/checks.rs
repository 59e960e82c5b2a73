//! What can be known about an expression before the first event, so that `bridge validate`
//! refuses what would fail every event: parts that fail whatever the event (`1 + "a"`), a
//! regular expression literal that does not compile, and results of the wrong type (a filter
//! `42`, a stream name `payload.n > 1`). CEL here is untyped (payloads are JSON), so a part
//! that reads the event is checked only where its type shows in its shape.

use cel::common::ast::{CallExpr, Expr, LiteralValue, operators};
use cel::parser::Expression;
use cel::{Context, Value};

use super::budget::Budget;
use super::guard::{children, quoted};
use super::one_line;

/// What a field's expression must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wanted {
    /// `filter`.
    Bool,
    /// `transform.stream`.
    StreamName,
    /// `transform.key`.
    Key,
    /// `transform.set_headers.*`.
    HeaderValue,
}

impl Wanted {
    fn accepts(self, kind: Kind) -> bool {
        use Kind::*;
        match self {
            Wanted::Bool => kind == Bool,
            Wanted::StreamName => matches!(kind, String | Null | Arithmetic),
            Wanted::Key => matches!(kind, String | Bytes | Null | Arithmetic),
            Wanted::HeaderValue => !matches!(kind, List | Map | Other),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Wanted::Bool => "a bool",
            Wanted::StreamName => "a string or null",
            Wanted::Key => "a string, bytes or null",
            Wanted::HeaderValue => "a string, bytes, number, bool or null",
        }
    }
}

/// The type of a value, as far as the shape of an expression tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Null,
    List,
    Map,
    /// What `+ - * / %` give: a number, a string, bytes, a list, a time; never a bool.
    Arithmetic,
    Other,
}

impl Kind {
    fn of(value: &Value) -> Kind {
        match value {
            Value::Bool(_) => Kind::Bool,
            Value::Int(_) => Kind::Int,
            Value::UInt(_) => Kind::Uint,
            Value::Float(_) => Kind::Double,
            Value::String(_) => Kind::String,
            Value::Bytes(_) => Kind::Bytes,
            Value::Null => Kind::Null,
            Value::List(_) => Kind::List,
            Value::Map(_) => Kind::Map,
            _ => Kind::Other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Bool => "bool",
            Kind::Int => "int",
            Kind::Uint => "uint",
            Kind::Double => "double",
            Kind::String => "string",
            Kind::Bytes => "bytes",
            Kind::Null => "null",
            Kind::List => "list",
            Kind::Map => "map",
            Kind::Arithmetic => "number, string, bytes or list",
            Kind::Other => "value of another type",
        }
    }
}

/// Problems of `root`, the expression of a field that must give `wanted`. `context` is one
/// without the event's variables; each constant part is evaluated in it within `budget`.
pub(super) fn check(
    root: &Expression,
    context: &Context<'_, '_>,
    wanted: Wanted,
    budget: Budget,
) -> Vec<String> {
    let mut problems = Vec::new();
    failing_constants(root, context, budget, &mut problems);
    invalid_patterns(root, context, budget, &mut problems);
    if let Some(kind) = kind(root, context, budget)
        && !wanted.accepts(kind)
    {
        problems.push(format!(
            "gives a {} whatever the event, not {}",
            kind.name(),
            wanted.describe()
        ));
    }
    problems
}

/// Whether the node's value is the same for every event: it reads no variable and runs no
/// comprehension (whose variables are bound inside it).
fn constant(expression: &Expression) -> bool {
    match &expression.expr {
        Expr::Ident(_) | Expr::Comprehension(_) | Expr::Unspecified => false,
        _ => children(expression).into_iter().all(constant),
    }
}

/// Reports every largest constant part that fails when evaluated (it would fail every event).
fn failing_constants(
    node: &Expression,
    context: &Context<'_, '_>,
    budget: Budget,
    problems: &mut Vec<String>,
) {
    if matches!(node.expr, Expr::Literal(_)) {
        return;
    }
    if constant(node) {
        if let Err(e) = super::budget::within(budget, || Value::resolve(node, context)) {
            problems.push(format!(
                "a part of it that does not depend on the event fails: {}",
                one_line(&e.to_string())
            ));
        }
        return;
    }
    for child in children(node) {
        failing_constants(child, context, budget, problems);
    }
}

/// Reports `matches` calls whose pattern is a literal that is not a valid regular expression.
fn invalid_patterns(
    node: &Expression,
    context: &Context<'_, '_>,
    budget: Budget,
    problems: &mut Vec<String>,
) {
    if let Expr::Call(call) = &node.expr
        && call.func_name == "matches"
        && let Some(pattern) = call.args.last()
        && matches!(pattern.expr, Expr::Literal(LiteralValue::String(_)))
    {
        // The pattern matched against itself: only compiling it matters.
        let probe = Expression {
            id: node.id,
            expr: Expr::Call(CallExpr {
                func_name: "matches".into(),
                target: Some(Box::new(pattern.clone())),
                args: vec![pattern.clone()],
            }),
        };
        if let Err(e) = super::budget::within(budget, || Value::resolve(&probe, context)) {
            problems.push(format!(
                "its regular expression {} does not compile: {}",
                quoted(&literal_text(pattern)),
                one_line(&e.to_string())
            ));
        }
    }
    for child in children(node) {
        invalid_patterns(child, context, budget, problems);
    }
}

fn literal_text(expression: &Expression) -> String {
    match &expression.expr {
        Expr::Literal(LiteralValue::String(s)) => s.inner().to_string(),
        _ => String::new(),
    }
}

/// The node's type where its shape (or, for a constant, its value) tells it.
fn kind(node: &Expression, context: &Context<'_, '_>, budget: Budget) -> Option<Kind> {
    if constant(node) {
        return super::budget::within(budget, || Value::resolve(node, context))
            .ok()
            .map(|v| Kind::of(&v));
    }
    match &node.expr {
        Expr::List(_) => Some(Kind::List),
        Expr::Map(_) => Some(Kind::Map),
        Expr::Select(select) if select.test => Some(Kind::Bool),
        Expr::Call(call) => match call.func_name.as_str() {
            operators::LOGICAL_AND
            | operators::LOGICAL_OR
            | operators::LOGICAL_NOT
            | operators::EQUALS
            | operators::NOT_EQUALS
            | operators::LESS
            | operators::LESS_EQUALS
            | operators::GREATER
            | operators::GREATER_EQUALS
            | operators::IN
            | "matches"
            | "startsWith"
            | "endsWith"
            | "contains" => Some(Kind::Bool),
            "size" | "int" => Some(Kind::Int),
            operators::ADD
            | operators::SUBSTRACT
            | operators::MULTIPLY
            | operators::DIVIDE
            | operators::MODULO
            | operators::NEGATE => Some(Kind::Arithmetic),
            "string" => Some(Kind::String),
            operators::CONDITIONAL => {
                let branches: Vec<_> = call
                    .args
                    .iter()
                    .skip(1)
                    .map(|a| kind(a, context, budget))
                    .collect();
                match branches.as_slice() {
                    [Some(a), Some(b)] if a == b => Some(*a),
                    _ => None,
                }
            }
            _ => None,
        },
        _ => None,
    }
}

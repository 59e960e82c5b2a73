//! Compiling an expression from an untrusted file without crashing: the CEL parser and
//! interpreter recurse once per level of the syntax tree, and a stack overflow aborts the
//! process (it cannot be caught). So the text is bounded before parsing (size, bracket
//! nesting), parsing runs on a thread with a known, large stack and inside `catch_unwind`,
//! and the tree is measured (iteratively) before anything recurses over it.
//!
//! The bounds come from measurements of cel 0.15 in a debug build, where frames are largest
//! (release frames are several times smaller): on a 64 MiB stack, evaluation overflowed at a
//! tree depth of about 200 for the deepest-framed shape (nested calls and lists) and about
//! 1,600 for `+` and index chains; parsing overflowed at about 400 nested parentheses.
//! [`MAX_TREE_DEPTH`] and [`MAX_NESTING`] stay well below.

use std::sync::Arc;

use cel::Env;
use cel::common::ast::{CallExpr, EntryExpr, Expr};
use cel::parser::Expression;

/// Longest expression accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 16 * 1024;
/// Deepest nesting of `(`, `[` and `{` accepted.
pub const MAX_NESTING: usize = 32;
/// Deepest syntax tree accepted (a chain `a + b + …` is as deep as it is long).
pub const MAX_TREE_DEPTH: usize = 128;
/// Stack of the threads that parse and evaluate expressions. Only what is used is committed.
pub const STACK_BYTES: usize = 64 << 20;

/// The function every comprehension's range goes through, charging its size to the event's
/// budget (see [`super::budget`]). `@` keeps it out of reach of expressions.
pub const BUDGET_FUNCTION: &str = "@tributary_budget";

/// At most this much of an expression is quoted in a message.
const QUOTED_CHARS: usize = 60;

/// The expression as messages quote it: whole when short, else its start and its size.
pub fn quoted(source: &str) -> String {
    let flat: String = source.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= QUOTED_CHARS {
        format!("`{flat}`")
    } else {
        let start: String = flat.chars().take(QUOTED_CHARS).collect();
        format!("`{start}…` ({} bytes)", source.len())
    }
}

/// Runs `work` on a thread with a [`STACK_BYTES`] stack and waits for it; a panic in it is
/// returned as `Err` with its message.
pub fn on_big_stack<T: Send>(work: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("tributary-cel".into())
            .stack_size(STACK_BYTES)
            .spawn_scoped(scope, || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                    .map_err(|panic| panic_message(&panic))
            });
        match worker {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| Err(panic_message(&panic))),
            Err(e) => Err(format!("cannot start a thread for the expression: {e}")),
        }
    })
}

/// The text of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Parses `source` into a tree that is safe to evaluate on a [`STACK_BYTES`] stack, with the
/// budget function around every comprehension's range. Call it on such a stack. `Err` says
/// why not, quoting at most the start of the expression.
pub fn parse(env: &Arc<Env>, source: &str) -> Result<Expression, String> {
    if source.len() > MAX_EXPRESSION_BYTES {
        return Err(format!(
            "the expression is {} bytes; at most {MAX_EXPRESSION_BYTES} are accepted",
            source.len()
        ));
    }
    let nesting = nesting(source);
    if nesting > MAX_NESTING {
        return Err(format!(
            "{} nests brackets {nesting} deep; at most {MAX_NESTING} levels are accepted",
            quoted(source)
        ));
    }
    let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        env.parser()
            .max_recursion_depth(MAX_NESTING as u16 * 2)
            .parse(source)
    }))
    .map_err(|panic| {
        format!(
            "{} could not be parsed (the CEL parser failed: {})",
            quoted(source),
            panic_message(&panic)
        )
    })?;
    let mut expression = parsed.map_err(|e| {
        let message: String = e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let message: String = message.chars().take(300).collect();
        format!(
            "{} is not a valid CEL expression: {message}",
            quoted(source)
        )
    })?;
    let depth = depth(&expression)?;
    if depth > MAX_TREE_DEPTH {
        return Err(format!(
            "{} is {depth} operations deep; at most {MAX_TREE_DEPTH} are accepted (split a long chain with parentheses, or shorten it)",
            quoted(source)
        ));
    }
    charge_comprehensions(&mut expression);
    Ok(expression)
}

/// The deepest bracket nesting outside string literals.
fn nesting(source: &str) -> usize {
    let bytes = source.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            quote @ (b'"' | b'\'') => {
                let triple = bytes[i..].starts_with(&[quote; 3]);
                let raw = i > 0 && matches!(bytes[i - 1], b'r' | b'R');
                i += if triple { 3 } else { 1 };
                while i < bytes.len() {
                    if bytes[i] == b'\\' && !raw {
                        i += 2;
                        continue;
                    }
                    if triple && bytes[i..].starts_with(&[quote; 3]) {
                        i += 2;
                        break;
                    }
                    if !triple && (bytes[i] == quote || bytes[i] == b'\n') {
                        break;
                    }
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// The children of a node (the operands of a call, a comprehension's parts, a list's
/// elements, a map's keys and values, a struct's field values).
pub(super) fn children(expression: &Expression) -> Vec<&Expression> {
    match &expression.expr {
        Expr::Call(CallExpr { target, args, .. }) => target
            .iter()
            .map(|t| t.as_ref())
            .chain(args.iter())
            .collect(),
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::List(list) => list.elements.iter().collect(),
        Expr::Map(map) => map
            .entries
            .iter()
            .flat_map(|entry| entry_children(&entry.expr))
            .collect(),
        Expr::Struct(s) => s
            .entries
            .iter()
            .flat_map(|entry| entry_children(&entry.expr))
            .collect(),
        Expr::Select(select) => vec![select.operand.as_ref()],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    }
}

fn entry_children(entry: &EntryExpr) -> Vec<&Expression> {
    match entry {
        EntryExpr::MapEntry(e) => vec![&e.key, &e.value],
        EntryExpr::StructField(f) => vec![&f.value],
    }
}

/// The tree's depth, found without recursion (the tree may be far too deep to recurse over);
/// `Err` for a node the interpreter cannot evaluate.
fn depth(root: &Expression) -> Result<usize, String> {
    let mut deepest = 0;
    let mut stack = vec![(root, 1usize)];
    while let Some((node, depth)) = stack.pop() {
        if matches!(node.expr, Expr::Unspecified) {
            return Err("the expression has a part the parser left unspecified".into());
        }
        deepest = deepest.max(depth);
        stack.extend(children(node).into_iter().map(|c| (c, depth + 1)));
    }
    Ok(deepest)
}

/// Wraps every comprehension's range in [`BUDGET_FUNCTION`]. Only called on trees within
/// [`MAX_TREE_DEPTH`], so recursion is bounded.
fn charge_comprehensions(expression: &mut Expression) {
    if let Expr::Comprehension(c) = &mut expression.expr {
        let range = std::mem::take(&mut c.iter_range);
        c.iter_range = Expression {
            id: range.id,
            expr: Expr::Call(CallExpr {
                func_name: BUDGET_FUNCTION.into(),
                target: None,
                args: vec![range],
            }),
        };
    }
    match &mut expression.expr {
        Expr::Call(CallExpr { target, args, .. }) => {
            if let Some(target) = target {
                charge_comprehensions(target);
            }
            args.iter_mut().for_each(charge_comprehensions);
        }
        Expr::Comprehension(c) => {
            for part in [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ] {
                charge_comprehensions(part);
            }
        }
        Expr::List(list) => list.elements.iter_mut().for_each(charge_comprehensions),
        Expr::Map(map) => map
            .entries
            .iter_mut()
            .for_each(|entry| charge_entry(&mut entry.expr)),
        Expr::Struct(s) => s
            .entries
            .iter_mut()
            .for_each(|entry| charge_entry(&mut entry.expr)),
        Expr::Select(select) => charge_comprehensions(&mut select.operand),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn charge_entry(entry: &mut EntryExpr) {
    match entry {
        EntryExpr::MapEntry(e) => {
            charge_comprehensions(&mut e.key);
            charge_comprehensions(&mut e.value);
        }
        EntryExpr::StructField(f) => charge_comprehensions(&mut f.value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_on_big_stack(source: &str) -> Result<Expression, String> {
        let env = Arc::new(Env::stdlib());
        on_big_stack(|| parse(&env, source)).unwrap()
    }

    #[test]
    fn nesting_skips_string_literals() {
        assert_eq!(nesting("((a)) + [1, {2: 3}]"), 2);
        assert_eq!(nesting("'((((' + \"[[[\" + r'\\(' + '''((\n(('''"), 0);
        assert_eq!(nesting("'it\\'s (' + (a)"), 1);
    }

    #[test]
    fn hostile_shapes_are_refused_and_ordinary_ones_pass() {
        for hostile in [
            vec!["1"; 6000].join("+"),
            format!("payload{}", ".a".repeat(5_000)),
            format!("{}1{}", "(".repeat(65_535), ")".repeat(65_535)),
            format!("{}1{}", "size([".repeat(40), "])".repeat(40)),
            "x".repeat(MAX_EXPRESSION_BYTES + 1),
        ] {
            let error = parse_on_big_stack(&hostile).unwrap_err();
            assert!(error.len() < 400, "{error}");
        }
        for ordinary in [
            "has(payload.amount) && payload.amount >= 100",
            "[1, 2, 3].map(x, [4, 5].map(y, x * y)).size() > 0",
            &vec!["payload.n == 1"; 60].join(" || "),
            &vec!["1"; 100].join(" + "),
        ] {
            parse_on_big_stack(ordinary).unwrap();
        }
    }

    #[test]
    fn long_expressions_are_quoted_short() {
        assert_eq!(quoted("a  ==\n 1"), "`a == 1`");
        let long = "x".repeat(1000);
        assert!(
            quoted(&long).ends_with("…` (1000 bytes)"),
            "{}",
            quoted(&long)
        );
    }
}

//! What one event's evaluation may cost. CEL has no loops; its only construct whose cost
//! multiplies is the comprehension (`map`, `filter`, `all`, `exists`, `exists_one`), which is
//! why nesting six `map`s over ten elements costs a million steps. Every comprehension's range
//! goes through [`charge`] before the loop starts: its size is taken from the event's step
//! budget, and the evaluation fails once the steps or the time are used up, before the work
//! is done. Everything else an expression does is bounded by its own size and the event's.

use std::cell::Cell;
use std::time::{Duration, Instant};

use cel::{ExecutionError, Value};

/// The most one event's filter and transform may cost together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Comprehension iterations (elements visited by `map`, `filter`, `all`, `exists`,
    /// `exists_one`, summed over every comprehension evaluated).
    pub steps: u64,
    /// Wall-clock time, checked whenever a comprehension starts.
    pub time: Duration,
}

impl Default for Budget {
    /// 100,000 steps and 100 ms: far above a filter over a payload's lists, far below what
    /// would stall a route.
    fn default() -> Self {
        Budget {
            steps: 100_000,
            time: Duration::from_millis(100),
        }
    }
}

/// What is left of the budget of the evaluation running on this thread.
#[derive(Clone, Copy)]
struct Left {
    steps: u64,
    deadline: Instant,
    limit: Budget,
}

thread_local! {
    static LEFT: Cell<Option<Left>> = const { Cell::new(None) };
}

/// Runs `evaluation` with `budget` for every comprehension in it.
pub fn within<T>(budget: Budget, evaluation: impl FnOnce() -> T) -> T {
    let previous = LEFT.with(|left| {
        left.replace(Some(Left {
            steps: budget.steps,
            deadline: Instant::now() + budget.time,
            limit: budget,
        }))
    });
    let result = evaluation();
    LEFT.with(|left| left.set(previous));
    result
}

/// The message of an evaluation stopped by its budget starts with this.
pub const OVER_BUDGET: &str = "over the expression budget";

/// Charges the size of a comprehension's range; returns the range.
pub fn charge(range: Value) -> Result<Value, ExecutionError> {
    let size = match &range {
        Value::List(list) => list.len() as u64,
        Value::Map(map) => map.map.len() as u64,
        // Not iterable: the comprehension reports that itself.
        _ => 0,
    };
    LEFT.with(|cell| {
        let Some(mut left) = cell.get() else {
            return Ok(());
        };
        if size > left.steps {
            return Err(ExecutionError::function_error(
                "budget",
                format!(
                    "{OVER_BUDGET}: more than {} comprehension steps per event",
                    left.limit.steps
                ),
            ));
        }
        if Instant::now() > left.deadline {
            return Err(ExecutionError::function_error(
                "budget",
                format!("{OVER_BUDGET}: more than {:?} per event", left.limit.time),
            ));
        }
        left.steps -= size;
        cell.set(Some(left));
        Ok(())
    })?;
    Ok(range)
}

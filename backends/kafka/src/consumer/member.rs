//! Static group membership: the `group.instance.id` each consumer of a process joins with.

use std::collections::HashSet;

use parking_lot::Mutex;

/// A `group.instance.id` held by one live consumer: consumers of the same group and topic in
/// one process get `<instance_id>.<topic>`, `….2`, `….3` in the order they are opened, so that
/// each keeps its id across restarts of the process. The ids are held per process, not per
/// backend: two backends connected with the same `instance_id` (a route reconnecting while its
/// old backend lingers) must not fence each other.
pub(crate) struct StaticMember {
    pub(super) id: String,
    group: String,
}

/// `(group, group.instance.id)` of every live static member in this process.
fn held() -> &'static Mutex<HashSet<(String, String)>> {
    static HELD: std::sync::OnceLock<Mutex<HashSet<(String, String)>>> = std::sync::OnceLock::new();
    HELD.get_or_init(Mutex::default)
}

impl StaticMember {
    /// Takes the first free id for `group` on `topic`.
    pub(crate) fn claim(instance_id: &str, group: &str, topic: &str) -> StaticMember {
        let base = format!("{instance_id}.{topic}");
        let mut taken = held().lock();
        let id = (1..)
            .map(|n| {
                if n == 1 {
                    base.clone()
                } else {
                    format!("{base}.{n}")
                }
            })
            .find(|id| !taken.contains(&(group.to_string(), id.clone())))
            .expect("an unbounded range has a free id");
        taken.insert((group.to_string(), id.clone()));
        StaticMember {
            id,
            group: group.to_string(),
        }
    }
}

impl Drop for StaticMember {
    fn drop(&mut self) {
        held().lock().remove(&(
            std::mem::take(&mut self.group),
            std::mem::take(&mut self.id),
        ));
    }
}

//! How close two names are: one measure for every "did you mean" hint (URL options, config keys,
//! URL schemes) and for spotting misspelt secret option names before their values are shown.

/// Whether `a` becomes `b` within `limit` edits (insert, delete, replace a character, or swap
/// two neighbours).
///
/// ```
/// use tributary::backend::within_edits;
/// assert!(within_edits("kafak", "kafka", 1));
/// assert!(within_edits("lingerms", "linger_ms", 1));
/// assert!(!within_edits("pulsar", "kafka", 2));
/// ```
pub fn within_edits(a: &str, b: &str, limit: usize) -> bool {
    edit_distance(a, b, limit) <= limit
}

/// The name in `known` that `name` most likely meant: the nearest within two edits, or a
/// quarter of the known name's length for long names; `None` when nothing is that close.
///
/// ```
/// use tributary::backend::closest_name;
/// let known = ["partitions", "fsync", "retention"];
/// assert_eq!(closest_name("partitons", known), Some("partitions"));
/// assert_eq!(closest_name("colour", known), None);
/// ```
pub fn closest_name<'k>(name: &str, known: impl IntoIterator<Item = &'k str>) -> Option<&'k str> {
    known
        .into_iter()
        .filter_map(|k| {
            let limit = 2.max(k.chars().count() / 4);
            let distance = edit_distance(name, k, limit);
            (distance <= limit).then_some((distance, k))
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance, or `usize::MAX` once it must exceed `limit` (names whose
/// lengths differ by more are not compared at all, so a long input costs nothing).
fn edit_distance(a: &str, b: &str, limit: usize) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > limit {
        return usize::MAX;
    }
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_edit_counts_once() {
        assert_eq!(edit_distance("fsync", "fsync", 2), 0);
        assert_eq!(edit_distance("fsyn", "fsync", 2), 1);
        assert_eq!(edit_distance("fsyncc", "fsync", 2), 1);
        assert_eq!(edit_distance("fsinc", "fsync", 2), 1);
        assert_eq!(edit_distance("fysnc", "fsync", 2), 1);
        assert_eq!(edit_distance("a", "abcd", 2), usize::MAX);
    }

    #[test]
    fn the_nearest_known_name_wins() {
        let known = ["retention", "retention_bytes"];
        assert_eq!(closest_name("retension", known), Some("retention"));
        assert_eq!(
            closest_name("retention_byte", known),
            Some("retention_bytes")
        );
        assert_eq!(closest_name("", known), None);
    }
}

//! "Did you mean": the closest of the allowed spellings to a misspelt key
//! or value, by edit distance.

/// Levenshtein distance between two strings, counted in characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    // One row of the distance matrix at a time.
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// The allowed spelling closest to `given`, if it is close enough to be a
/// typo: at most a third of its length apart (at least one edit), ignoring
/// case.
pub fn closest<'a>(given: &str, allowed: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let given_lower = given.to_lowercase();
    let limit = (given.chars().count() / 3).max(1);
    allowed
        .into_iter()
        .filter(|candidate| *candidate != given)
        .map(|candidate| {
            (
                edit_distance(&given_lower, &candidate.to_lowercase()),
                candidate,
            )
        })
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// `: did you mean 'x'?` when a spelling is close to `given`, else nothing.
pub fn did_you_mean<'a>(given: &str, allowed: impl IntoIterator<Item = &'a str>) -> String {
    closest(given, allowed)
        .map(|c| format!(": did you mean '{c}'?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("deferred", "deferred"), 0);
        assert_eq!(edit_distance("defered", "deferred"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("città", "citta"), 1);
    }

    #[test]
    fn a_close_spelling_is_suggested_and_a_distant_one_is_not() {
        let modes = ["sync", "deferred", "auto"];
        assert_eq!(closest("defered", modes), Some("deferred"));
        assert_eq!(closest("SYNC", modes), Some("sync"));
        assert_eq!(closest("asynchronous", modes), None);
        assert_eq!(
            did_you_mean("conect_timeout", ["timeout", "connect_timeout"]),
            ": did you mean 'connect_timeout'?"
        );
        assert_eq!(did_you_mean("zzz", ["timeout"]), "");
    }
}

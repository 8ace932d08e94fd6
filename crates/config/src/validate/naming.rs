//! Naming rules and typo suggestions: what a valid pipeline name is, a
//! valid name resembling an invalid one, and the closest allowed word to a
//! misspelt key or type.
//!
//! These are pure string functions: they must never build errors or look
//! at a document, so every check can use them.

/// Levenshtein distance.
pub(super) fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate within edit distance 2 (case-insensitive).
pub(super) fn suggest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let w = word.to_lowercase();
    candidates
        .iter()
        .map(|c| (distance(&w, &c.to_lowercase()), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Whether `s` matches `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`.
pub(super) fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && b.len() <= 63 && b.iter().all(|c| ok(c) || *c == b'-') && ok(&b[0]) && ok(&b[b.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::schema::BATCH_KEYS;

    #[test]
    fn names() {
        for ok in ["a", "0", "orders-cdc", "a1-b2", &"x".repeat(63)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("max_event", BATCH_KEYS), Some("max_events"));
        assert_eq!(suggest("zzz", BATCH_KEYS), None);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}

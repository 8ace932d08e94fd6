//! The commit policy: which sink acknowledgements let the checkpoint advance.

use std::fmt;

/// When a batch counts as delivered.
///
/// ```
/// use deltaforge_core::CommitPolicy;
/// let p = CommitPolicy::Quorum(2);
/// assert!(p.is_satisfied(&[true, false, true], &[true, true, true]));
/// assert!(!p.is_satisfied(&[true, false, false], &[true, true, true]));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommitPolicy {
    /// Every sink must acknowledge.
    #[default]
    All,
    /// Every sink marked `required: true` must acknowledge.
    Required,
    /// At least this many sinks must acknowledge.
    Quorum(usize),
}

impl CommitPolicy {
    /// Whether the acknowledgements (`acked[i]` for sink `i`) satisfy the policy,
    /// given which sinks are required.
    pub fn is_satisfied(&self, acked: &[bool], required: &[bool]) -> bool {
        match self {
            CommitPolicy::All => acked.iter().all(|a| *a),
            CommitPolicy::Required => acked.iter().zip(required).all(|(a, r)| *a || !*r),
            CommitPolicy::Quorum(n) => acked.iter().filter(|a| **a).count() >= *n,
        }
    }

    /// Whether the checkpoint can never advance without sink `i`: such a
    /// sink retries until it succeeds and never gives a batch up.
    pub fn needs_sink(&self, required: bool) -> bool {
        match self {
            CommitPolicy::All => true,
            CommitPolicy::Required => required,
            CommitPolicy::Quorum(_) => false,
        }
    }
}

impl fmt::Display for CommitPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommitPolicy::All => f.write_str("all"),
            CommitPolicy::Required => f.write_str("required"),
            CommitPolicy::Quorum(n) => write!(f, "quorum({n})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CommitPolicy::*;

    #[test]
    fn all_needs_every_ack() {
        assert!(All.is_satisfied(&[true, true], &[true, false]));
        assert!(!All.is_satisfied(&[true, false], &[true, false]));
        assert!(All.needs_sink(false));
    }

    #[test]
    fn required_ignores_failing_optional_sink() {
        assert!(Required.is_satisfied(&[true, false], &[true, false]));
        assert!(!Required.needs_sink(false));
    }

    #[test]
    fn required_blocks_on_failing_required_sink() {
        assert!(!Required.is_satisfied(&[false, true], &[true, false]));
        assert!(Required.needs_sink(true));
    }

    #[test]
    fn quorum_counts_acks() {
        assert!(Quorum(1).is_satisfied(&[false, true, false], &[true; 3]));
        assert!(!Quorum(3).is_satisfied(&[true, true, false], &[true; 3]));
        assert!(!Quorum(1).needs_sink(true));
    }
}

//! The `spec.commit_policy` section: its string and mapping forms, and
//! whether the policy can ever be satisfied by the pipeline's sinks.
//!
//! It reads the sinks only through [`SinkSummary`]; it must never check
//! the sinks themselves.

use deltaforge_core::CommitPolicy;
use serde_json::Value;

use super::collect::{describe, Ctx};
use super::naming::suggest;
use super::sinks::SinkSummary;

const POLICY_FIX: &str = "use `all`, `required`, `quorum(n)` or `{ quorum: n }` with n ≥ 1";

impl Ctx<'_> {
    /// `spec.commit_policy`, default `all`; `None` when invalid or unsatisfiable.
    pub(super) fn policy(&mut self, v: Option<&Value>, sinks: &SinkSummary) -> Option<CommitPolicy> {
        let field = "spec.commit_policy";
        let policy = match v {
            None | Some(Value::Null) => CommitPolicy::All,
            Some(Value::String(s)) => match parse_policy(s) {
                Ok(p) => p,
                Err((message, fix)) => {
                    self.err(field, message, fix);
                    return None;
                }
            },
            Some(Value::Object(m)) => {
                self.check_keys(m, field, &["quorum"]);
                match m.get("quorum") {
                    Some(q) => match q.as_u64().filter(|n| *n >= 1) {
                        Some(n) => CommitPolicy::Quorum(usize::try_from(n).unwrap_or(usize::MAX)),
                        None => {
                            self.err(
                                format!("{field}.quorum"),
                                format!("must be a positive integer, found {}", describe(q)),
                                POLICY_FIX,
                            );
                            return None;
                        }
                    },
                    None => {
                        self.err(field, "the mapping form needs the key `quorum`", POLICY_FIX);
                        return None;
                    }
                }
            }
            Some(other) => {
                self.err(field, format!("expected a string or a mapping, found {}", describe(other)), POLICY_FIX);
                return None;
            }
        };
        match policy {
            CommitPolicy::Quorum(n) if sinks.count > 0 && n > sinks.count => {
                self.err(
                    field,
                    format!(
                        "quorum({n}) needs {n} sink acknowledgements but the pipeline has only {} sink(s); the checkpoint could never advance",
                        sinks.count
                    ),
                    format!("lower the quorum to at most {} or add sinks", sinks.count),
                );
                None
            }
            CommitPolicy::Required if sinks.count > 0 && !sinks.any_required => {
                self.err(
                    field,
                    "commit policy `required` but every sink says `required: false`, so no acknowledgement would be awaited",
                    "mark at least one sink `required: true` (the default), or use `all` or `quorum(n)`",
                );
                None
            }
            p => Some(p),
        }
    }
}

/// Parses the string form of a commit policy; Err((message, fix)).
fn parse_policy(s: &str) -> Result<CommitPolicy, (String, String)> {
    let t = s.trim();
    match t {
        "all" => return Ok(CommitPolicy::All),
        "required" => return Ok(CommitPolicy::Required),
        _ => {}
    }
    if let Some(inner) = t.strip_prefix("quorum(").and_then(|r| r.strip_suffix(')')) {
        return match inner.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(CommitPolicy::Quorum(n)),
            _ => Err(("invalid quorum: n in quorum(n) must be a positive integer".to_string(), POLICY_FIX.to_string())),
        };
    }
    let fix = match suggest(t, &["all", "required", "quorum(n)"]) {
        Some(k) => format!("did you mean `{k}`? {POLICY_FIX}"),
        None => POLICY_FIX.to_string(),
    };
    Err(("unknown commit policy".to_string(), fix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_strings() {
        assert_eq!(parse_policy("all"), Ok(CommitPolicy::All));
        assert_eq!(parse_policy(" required "), Ok(CommitPolicy::Required));
        assert_eq!(parse_policy("quorum( 2 )"), Ok(CommitPolicy::Quorum(2)));
        assert!(parse_policy("quorum(0)").is_err());
        assert!(parse_policy("quorum(x)").is_err());
        assert!(parse_policy("requird").unwrap_err().1.contains("did you mean `required`?"));
    }
}

//! Environment expansion of the raw spec text, before YAML parsing.
//!
//! This module owns the `${NAME}` / `${NAME:-default}` syntax. Only
//! upper-case, environment-style names (`[A-Z_][A-Z0-9_]*`) are expanded:
//! lower-case placeholders such as `${db}` or `${after.id}` are sink
//! templates resolved per event at run time and pass through untouched.
//! `$${...}` escapes a literal `${...}`. Lines whose first non-blank
//! character is `#` are copied verbatim.
//!
//! Which variables a text may read is the caller's [`EnvAccess`]: every
//! variable for the operator's own spec files, only an allow-list for specs
//! sent through the REST API (whoever can reach the API must not be able to
//! copy the server's environment into a sink).
//!
//! It reads variables only through the lookup function it is given (never
//! the process environment directly) and must never log or echo a value it
//! substituted: errors name variables, not their contents.

use std::collections::BTreeSet;

use crate::error::{ConfigError, ConfigErrors};

/// Which environment variables the `${NAME}` placeholders of a text may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvAccess {
    /// Every variable: the operator's own spec files (`--config`).
    All,
    /// Only the listed names. Any other name counts as unset, whatever the
    /// environment holds: `${NAME:-default}` takes its default and `${NAME}`
    /// is an error whose fix is `how_to_allow`.
    Only {
        /// The names that may be read.
        names: BTreeSet<String>,
        /// How the operator allows another name (e.g. "start deltaforge with
        /// --api-env-allow NAME"), shown in the error's fix.
        how_to_allow: String,
    },
}

impl EnvAccess {
    /// `Only` the listed names, or `All` when the list holds `*`.
    ///
    /// ```
    /// use deltaforge_config::EnvAccess;
    /// assert_eq!(EnvAccess::from_list(&["*".to_string()], ""), EnvAccess::All);
    /// let only = EnvAccess::from_list(&["PG_DSN".to_string()], "allow it");
    /// assert!(only.allows("PG_DSN") && !only.allows("HOME"));
    /// ```
    pub fn from_list(names: &[String], how_to_allow: &str) -> EnvAccess {
        if names.iter().any(|n| n.trim() == "*") {
            return EnvAccess::All;
        }
        EnvAccess::Only {
            names: names.iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect(),
            how_to_allow: how_to_allow.to_string(),
        }
    }

    /// Whether `name` may be read.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            EnvAccess::All => true,
            EnvAccess::Only { names, .. } => names.contains(name),
        }
    }
}

/// The lookup and the access rule of one expansion.
struct Vars<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    access: &'a EnvAccess,
}

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<String> {
        if self.access.allows(name) {
            (self.env)(name)
        } else {
            None
        }
    }

    /// The error of `${name}` without a value.
    fn unset(&self, origin: &str, lineno: usize, name: &str) -> ConfigError {
        match self.access {
            EnvAccess::Only { how_to_allow, .. } if !self.access.allows(name) => ConfigError::new(
                origin,
                format!("line {lineno}"),
                format!("environment variable {name} may not be read by this spec (line {lineno})"),
                format!("write the value into the spec, use ${{{name}:-default}}, or {how_to_allow}"),
            ),
            _ => ConfigError::new(
                origin,
                format!("line {lineno}"),
                format!("environment variable {name} is not set (line {lineno})"),
                format!("export {name} or use ${{{name}:-default}}"),
            ),
        }
    }
}

/// Expands environment placeholders in `text`.
///
/// * `${NAME}` is replaced by the variable's value; an unset variable is an
///   error naming the variable and the line.
/// * `${NAME:-default}` uses `default` when the variable is unset or empty
///   (shell semantics). The default runs to the first `}`; it is not itself
///   expanded.
/// * `$${...}` yields a literal `${...}`.
/// * Placeholders whose name is not upper-case env style (`${db}`,
///   `${after.id}`, `${Foo}`) are left untouched: they are sink templates.
/// * Lines whose first non-blank character is `#` are not expanded (this
///   includes such lines inside YAML block scalars).
///
/// Values are inserted as raw text, so a value containing YAML syntax
/// (`: `, `#`, newlines) should be quoted in the spec (`dsn: "${PG_DSN}"`).
/// All problems are collected, not just the first. Every variable may be
/// read; [`expand_env_with_access`] restricts that.
///
/// ```
/// use deltaforge_config::expand_env;
/// let env = |k: &str| (k == "HOST").then(|| "db1".to_string());
/// let out = expand_env("dsn: pg://${HOST}:${PORT:-5432}/${db}\n", "x.yaml", &env).unwrap();
/// assert_eq!(out, "dsn: pg://db1:5432/${db}\n");
/// ```
pub fn expand_env(text: &str, origin: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ConfigErrors> {
    expand_env_with_access(text, origin, env, &EnvAccess::All)
}

/// Like [`expand_env`], reading only the variables `access` allows: any
/// other name counts as unset, so `${NAME:-default}` takes its default and
/// `${NAME}` is an error (naming the variable, never a value) whose fix
/// says how to allow it.
///
/// ```
/// use deltaforge_config::{expand_env_with_access, EnvAccess};
/// let env = |k: &str| Some(format!("value-of-{k}"));
/// let access = EnvAccess::from_list(&["HOST".to_string()], "allow it with --api-env-allow");
/// let out = expand_env_with_access("h: ${HOST} p: ${PORT:-5432}\n", "<api>", &env, &access).unwrap();
/// assert_eq!(out, "h: value-of-HOST p: 5432\n");
/// let err = expand_env_with_access("home: ${HOME}\n", "<api>", &env, &access).unwrap_err();
/// assert!(err.to_string().contains("HOME may not be read") && !err.to_string().contains("value-of"));
/// ```
pub fn expand_env_with_access(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
    access: &EnvAccess,
) -> Result<String, ConfigErrors> {
    let vars = Vars { env, access };
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (idx, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        expand_line(line, idx + 1, origin, &vars, &mut out, &mut errors);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Length of the env-style name at the start of `s` (`[A-Z_][A-Z0-9_]*`), 0 if none.
fn env_name_len(s: &str) -> usize {
    let b = s.as_bytes();
    match b.first() {
        Some(c) if c.is_ascii_uppercase() || *c == b'_' => {}
        _ => return 0,
    }
    b.iter().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || **c == b'_').count()
}

fn expand_line(
    line: &str,
    lineno: usize,
    origin: &str,
    vars: &Vars<'_>,
    out: &mut String,
    errors: &mut Vec<ConfigError>,
) {
    let mut i = 0; // scan position
    let mut copied = 0; // bytes of `line` already copied to `out`
    while let Some(rel) = line[i..].find('$') {
        let pos = i + rel;
        let rest = &line[pos..];
        if rest.starts_with("$${") {
            out.push_str(&line[copied..pos]);
            out.push_str("${");
            i = pos + 3;
            copied = i;
            continue;
        }
        if !rest.starts_with("${") {
            i = pos + 1;
            continue;
        }
        let inner = &rest[2..];
        let name_len = env_name_len(inner);
        if name_len == 0 {
            // A template such as `${db}`: not ours.
            i = pos + 2;
            continue;
        }
        let name = &inner[..name_len];
        let tail = &inner[name_len..];
        let replacement: Option<(usize, String)> = if tail.starts_with('}') {
            let consumed = 2 + name_len + 1;
            match vars.get(name) {
                Some(v) => Some((consumed, v)),
                None => {
                    errors.push(vars.unset(origin, lineno, name));
                    Some((consumed, String::new()))
                }
            }
        } else if let Some(d) = tail.strip_prefix(":-") {
            match d.find('}') {
                Some(end) => {
                    let default = &d[..end];
                    let value = vars.get(name).filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string());
                    Some((2 + name_len + 2 + end + 1, value))
                }
                None => {
                    errors.push(unterminated(origin, lineno, name));
                    None
                }
            }
        } else {
            match tail.chars().next() {
                // `${Foo}`, `${A.b}`: not env style, a template.
                Some(c) if c.is_ascii_lowercase() || c == '.' => None,
                None | Some('\n') | Some('\r') => {
                    errors.push(unterminated(origin, lineno, name));
                    None
                }
                Some(_) => {
                    errors.push(ConfigError::new(
                        origin,
                        format!("line {lineno}"),
                        format!(
                            "unsupported placeholder syntax after ${{{name} (line {lineno}); only ${{NAME}} and ${{NAME:-default}} are expanded"
                        ),
                        format!(
                            "write ${{{name}}} or ${{{name}:-default}}, or escape a literal as $${{...}}"
                        ),
                    ));
                    None
                }
            }
        };
        match replacement {
            Some((consumed, value)) => {
                out.push_str(&line[copied..pos]);
                out.push_str(&value);
                i = pos + consumed;
                copied = i;
            }
            None => i = pos + 2,
        }
    }
    out.push_str(&line[copied..]);
}

fn unterminated(origin: &str, lineno: usize, name: &str) -> ConfigError {
    ConfigError::new(
        origin,
        format!("line {lineno}"),
        format!("unterminated placeholder ${{{name} (line {lineno})"),
        format!("close it on the same line: ${{{name}}} or ${{{name}:-default}}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "PG_DSN" => Some("postgres://u:pw@h/db".into()),
            "EMPTY" => Some(String::new()),
            "N_1" => Some("7".into()),
            _ => None,
        }
    }

    fn ok(text: &str) -> String {
        expand_env(text, "t.yaml", &env).unwrap()
    }

    #[test]
    fn set_variable_is_substituted() {
        assert_eq!(ok("dsn: ${PG_DSN}\n"), "dsn: postgres://u:pw@h/db\n");
        assert_eq!(ok("a: ${N_1}${N_1} b\r\n"), "a: 77 b\r\n");
    }

    #[test]
    fn default_is_used_when_unset_or_empty() {
        assert_eq!(ok("a: ${NOPE:-x y}\nb: ${EMPTY:-d}\nc: ${N_1:-9}\nd: ${NOPE:-}"), "a: x y\nb: d\nc: 7\nd: ");
    }

    #[test]
    fn unset_without_default_is_an_error_with_line_and_origin() {
        let errs = expand_env("a: 1\nb: ${MISSING_VAR}\nc: ${OTHER}\n", "cfg/p.yaml", &env).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs}");
        let e = &errs.0[0];
        assert_eq!(e.origin, "cfg/p.yaml");
        assert_eq!(e.field, "line 2");
        assert!(e.message.contains("MISSING_VAR") && e.message.contains("line 2"));
        assert_eq!(e.fix, "export MISSING_VAR or use ${MISSING_VAR:-default}");
        assert!(errs.0[1].message.contains("OTHER") && errs.0[1].field == "line 3");
        assert!(errs.to_string().starts_with("cfg/p.yaml: line 2: "));
    }

    #[test]
    fn lowercase_templates_are_untouched() {
        let t = "path: ./out/${db}/${table}-${after.id}.jsonl ${Foo} ${_x} ${A.b}\n";
        assert_eq!(ok(t), t);
    }

    #[test]
    fn escape_produces_a_literal_placeholder() {
        assert_eq!(ok("a: $${PG_DSN} $$ $x ${N_1}\n"), "a: ${PG_DSN} $$ $x 7\n");
    }

    #[test]
    fn comment_lines_are_not_expanded() {
        let t = "# needs ${MISSING}\n   # also ${MISSING}\na: ${N_1} # trailing ${N_1}\n";
        assert_eq!(ok(t), "# needs ${MISSING}\n   # also ${MISSING}\na: 7 # trailing 7\n");
    }

    #[test]
    fn malformed_env_placeholders_are_errors() {
        let errs = expand_env("a: ${PG_DSN\nb: ${PG_DSN:x}\nc: ${N_1:-oops\n", "t", &env).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs}");
        assert_eq!(errs.0[0].field, "line 1");
        assert!(errs.0[1].message.contains("unsupported"));
        assert_eq!(errs.0[2].field, "line 3");
    }

    #[test]
    fn text_without_trailing_newline_and_unicode() {
        assert_eq!(ok("ä: ${N_1}ö"), "ä: 7ö");
        assert_eq!(ok(""), "");
    }

    fn only(names: &[&str]) -> EnvAccess {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        EnvAccess::from_list(&names, "start deltaforge with --api-env-allow NAME")
    }

    #[test]
    fn restricted_access_reads_only_the_listed_names() {
        let access = only(&["N_1"]);
        let out = expand_env_with_access("a: ${N_1} b: ${PG_DSN:-none} c: ${db}\n", "<api>", &env, &access).unwrap();
        assert_eq!(out, "a: 7 b: none c: ${db}\n", "an unlisted name counts as unset");
        let errs = expand_env_with_access("x: 1\ndsn: ${PG_DSN}\n", "<api>", &env, &access).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs}");
        let e = &errs.0[0];
        assert_eq!(e.field, "line 2");
        assert!(e.message.contains("PG_DSN may not be read"), "{e}");
        assert!(e.fix.contains("--api-env-allow"), "{e}");
        assert!(!errs.to_string().contains("pw@h"), "never the value: {errs}");
        // A listed but unset name is the ordinary error.
        let errs = expand_env_with_access("a: ${MISSING}\n", "<api>", &env, &only(&["MISSING"])).unwrap_err();
        assert!(errs.0[0].message.contains("MISSING is not set"), "{errs}");
    }

    #[test]
    fn an_empty_list_reads_nothing_and_a_star_reads_everything() {
        let none = only(&[]);
        assert!(expand_env_with_access("a: ${N_1}\n", "<api>", &env, &none).is_err());
        assert_eq!(only(&["A", "*"]), EnvAccess::All);
        assert_eq!(expand_env_with_access("a: ${N_1}\n", "<api>", &env, &only(&["*"])).unwrap(), "a: 7\n");
    }

    #[test]
    fn never_panics_on_odd_input() {
        let alphabet: Vec<char> = "${}$:-AZ_az.#\n é€😀".chars().collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let len = (seed % 24) as usize;
            let s: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            let _ = expand_env(&s, "t", &env);
        }
    }
}

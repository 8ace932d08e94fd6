//! Turning a [`FilterConfig`] into a [`CompiledFilter`]: op names, and the
//! `where` tree compiled once (regexes included) with every mistake
//! reported with its path, e.g. `where.all[1].gt`.
//!
//! It must never test events: that is `eval`'s job.

use std::cmp::Ordering;

use deltaforge_core::{ComponentConfig, ConfigProblem, Op};
use regex::Regex;
use serde_json::Value;

use super::config::{Action, FilterConfig};
use super::eval::CompiledFilter;
use super::predicate::{Field, Pred, Test, OPERATORS};
use crate::value::FieldPath;

/// The op named `s`: a code (`c`) or a long name (`insert`).
fn parse_op(s: &str) -> Option<Op> {
    Op::from_code(s).or(match s {
        "insert" | "create" => Some(Op::Create),
        "update" => Some(Op::Update),
        "delete" => Some(Op::Delete),
        "read" | "snapshot" => Some(Op::Read),
        "truncate" => Some(Op::Truncate),
        _ => None,
    })
}

/// Compiles a predicate; `columns` collects the column names the leaves read.
fn compile(v: &Value, path: &str, columns: &mut Vec<String>) -> Result<Pred, ConfigProblem> {
    let err = |msg: String| ConfigProblem::new(path, msg);
    let m = v.as_object().ok_or_else(|| {
        err("a predicate must be a mapping: `{ field: after.x, eq: 1 }`, `all: [..]`, `any: [..]` or `not: {..}`"
            .into())
    })?;
    for comb in ["all", "any", "not"] {
        if let Some(inner) = m.get(comb) {
            if m.len() != 1 {
                return Err(err(format!("`{comb}` must be the only key of its mapping; nest other tests inside it")));
            }
            let inner_path = if path.is_empty() { comb.to_string() } else { format!("{path}.{comb}") };
            if comb == "not" {
                return Ok(Pred::Not(Box::new(compile(inner, &inner_path, columns)?)));
            }
            let list = inner
                .as_array()
                .ok_or_else(|| ConfigProblem::new(&inner_path, format!("`{comb}` takes a list of predicates")))?;
            let preds = list
                .iter()
                .enumerate()
                .map(|(i, p)| compile(p, &format!("{inner_path}[{i}]"), columns))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(if comb == "all" { Pred::All(preds) } else { Pred::Any(preds) });
        }
    }
    let field = match m.get("field") {
        Some(Value::String(f)) => f,
        Some(_) => return Err(err("`field` must be a string such as `after.status`".into())),
        None => {
            return Err(err(format!(
                "a predicate needs `field:` and one operator ({OPERATORS}), or one of `all`, `any`, `not`"
            )))
        }
    };
    let field =
        FieldPath::parse(field).map_err(|m| ConfigProblem::new(format!("{path}.field").trim_start_matches('.'), m))?;
    let ops: Vec<(&String, &Value)> = m.iter().filter(|(k, _)| k.as_str() != "field").collect();
    let [(op, operand)] = ops.as_slice() else {
        return Err(err(format!(
            "a field test needs exactly one operator ({OPERATORS}); found {}",
            if ops.is_empty() {
                "none".to_string()
            } else {
                ops.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ")
            }
        )));
    };
    let op_path = if path.is_empty() { op.to_string() } else { format!("{path}.{op}") };
    let op_err = |msg: &str| ConfigProblem::new(&op_path, msg);
    let ordered = |o: &Value| match o {
        Value::Number(_) | Value::String(_) => Ok(o.clone()),
        _ => Err(op_err("operand must be a number or a string")),
    };
    let test = match op.as_str() {
        "eq" => Test::Eq((*operand).clone()),
        "ne" => Test::Ne((*operand).clone()),
        "gt" => Test::Cmp(ordered(operand)?, |o| o == Ordering::Greater),
        "gte" => Test::Cmp(ordered(operand)?, |o| o != Ordering::Less),
        "lt" => Test::Cmp(ordered(operand)?, |o| o == Ordering::Less),
        "lte" => Test::Cmp(ordered(operand)?, |o| o != Ordering::Greater),
        "in" => {
            let list =
                operand.as_array().cloned().ok_or_else(|| op_err("operand must be a list, e.g. [paid, shipped]"))?;
            let strings = list.iter().all(Value::is_string);
            Test::In(list, strings)
        }
        "regex" => {
            let s = operand.as_str().ok_or_else(|| op_err("operand must be a regular expression string"))?;
            Test::Regex(Regex::new(s).map_err(|e| ConfigProblem::new(&op_path, format!("invalid regex: {e}")))?)
        }
        "exists" => Test::Exists(operand.as_bool().ok_or_else(|| op_err("operand must be true or false"))?),
        "changed" => Test::Changed(operand.as_bool().ok_or_else(|| op_err("operand must be true or false"))?),
        other => return Err(err(format!("unknown operator `{other}`; known: {OPERATORS}"))),
    };
    let slot = match columns.iter().position(|c| *c == field.column) {
        Some(slot) => slot,
        None => {
            columns.push(field.column.clone());
            columns.len() - 1
        }
    };
    Ok(Pred::Leaf(Field { path: field, slot }, test))
}

impl ComponentConfig for FilterConfig {
    /// Validates the config by compiling it (see [`FilterConfig::compile`]).
    fn check(&self) -> Result<(), ConfigProblem> {
        self.compile().map(|_| ())
    }
}

impl FilterConfig {
    /// Validates and compiles the config; errors name the field path.
    pub fn compile(&self) -> Result<CompiledFilter, ConfigProblem> {
        let ops = match &self.ops {
            None => None,
            Some(list) => Some(
                list.iter()
                    .enumerate()
                    .map(|(i, s)| {
                        parse_op(s).ok_or_else(|| {
                            ConfigProblem::new(
                                format!("ops[{i}]"),
                                format!("unknown op {s:?}; use c, u, d, r, t (insert, update, delete, read, truncate)"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let mut columns = Vec::new();
        let predicate = self.predicate.as_ref().map(|p| compile(p, "where", &mut columns)).transpose()?;
        Ok(CompiledFilter {
            ops,
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            predicate,
            columns,
            keep: self.action == Action::Keep,
        })
    }
}

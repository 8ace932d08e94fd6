//! The compiled predicate tree of a filter's `where`: combinators, leaves,
//! the field a leaf reads and its operator with a ready operand (regexes
//! compiled).
//!
//! It holds types only: it must never parse config nor look at events, so
//! that both `parse` and `eval` can depend on it.

use std::cmp::Ordering;

use regex::Regex;
use serde_json::Value;

use crate::value::FieldPath;

/// A compiled predicate.
#[derive(Debug, Clone)]
pub(super) enum Pred {
    /// True when every element is (true when empty).
    All(Vec<Pred>),
    /// True when some element is (false when empty).
    Any(Vec<Pred>),
    /// The negation.
    Not(Box<Pred>),
    /// One operator applied to one field.
    Leaf(Field, Test),
}

/// A leaf's field: its path, and the index of its column name in
/// [`CompiledFilter::columns`] (the slot of its position in a column list).
#[derive(Debug, Clone)]
pub(super) struct Field {
    /// Where the value is read.
    pub(super) path: FieldPath,
    /// Index into [`CompiledFilter::columns`](super::CompiledFilter).
    pub(super) slot: usize,
}

/// A leaf's operator with its compiled operand.
#[derive(Debug, Clone)]
pub(super) enum Test {
    /// `eq`.
    Eq(Value),
    /// `ne`.
    Ne(Value),
    /// `gt`, `gte`, `lt`, `lte`: the operand and which orderings satisfy it.
    Cmp(Value, fn(Ordering) -> bool),
    /// The list, and whether all its elements are strings (then a string
    /// value matches exactly when it equals one of them).
    In(Vec<Value>, bool),
    /// `regex`.
    Regex(Regex),
    /// `exists`.
    Exists(bool),
    /// `changed`.
    Changed(bool),
}

/// The leaf operators, for error messages.
pub(super) const OPERATORS: &str = "eq, ne, gt, gte, lt, lte, in, regex, exists, changed";

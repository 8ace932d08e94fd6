//! `type: filter` — keeps or drops events by op, table and field values.
//!
//! ```yaml
//! - type: filter
//!   config:
//!     name: paid-orders        # optional; metrics label and error prefix (default: filter)
//!     action: keep             # keep (default): keep matching events, drop the rest
//!                              # drop: drop matching events, keep the rest
//!     ops: [c, u]              # c u d r t (or insert update delete read truncate); default: any
//!     include: [shop.orders, shop.order_*]   # db.table patterns with `*`; default: every table
//!     exclude: [shop.order_archive]          # never match these tables
//!     where:                   # optional predicate tree
//!       all:
//!         - { field: after.status, in: [paid, shipped] }
//!         - any:
//!             - { field: after.amount, gte: 100 }
//!             - { field: after.note, regex: "^VIP" }
//!         - { field: status, changed: true }           # updates whose status changed
//!         - not: { field: before.deleted_at, exists: true }
//! ```
//!
//! An event *matches* when its op is in `ops`, its table matches `include`
//! and no `exclude` pattern, and `where` holds. With `action: keep` the
//! matching events go on; with `action: drop` they are removed.
//!
//! **Predicates.** A leaf is `{ field: PATH, OPERATOR: OPERAND }` with
//! exactly one operator; `all: [..]`, `any: [..]` and `not: {..}` combine
//! predicates and nest freely (`all: []` is true, `any: []` is false).
//! `PATH` is `after.COLUMN`, `before.COLUMN`, or `COLUMN` (the after image,
//! or the before image for deletes); further `.key` segments walk into JSON
//! object values (`after.doc.customer.id`).
//!
//! | operator | operand | matches when |
//! |---|---|---|
//! | `eq` / `ne` | any JSON value | equal / not equal |
//! | `gt` `gte` `lt` `lte` | number or string | the ordering holds |
//! | `in` | list | equal to one element |
//! | `regex` | regex (Rust `regex` syntax, unanchored) | a string, number or boolean value matches |
//! | `exists` | `true`/`false` | the field is present and not null / absent or null |
//! | `changed` | `true`/`false` | an update whose before and after values of the field differ / are equal |
//!
//! Comparisons are numeric when one side is a number and the other a number
//! or numeric string (sources send decimals as strings: `"12.50"` equals
//! `12.5`); two strings compare bytewise (ISO-8601 timestamps order by
//! time); any other pair never satisfies `gt`…`lte`. A missing or null field
//! satisfies only `ne` (with a non-null operand), `exists: false` and
//! `eq: null` (null only). `changed` is false for anything but an update;
//! an absent before image counts as "absent", so an update whose source
//! logs no before image (PostgreSQL without `REPLICA IDENTITY FULL`) counts
//! as changed for every column present after.
//!
//! The predicate tree is compiled once at build time (regexes included), so
//! every config mistake is reported at validation with its path, e.g.
//! `where.all[1].gt: operand must be a number or a string`.
//!
//! Hand-written predicate parsing (rather than a serde enum) gives those
//! path-precise errors; regexes use the `regex` crate (linear-time, no
//! catastrophic backtracking on user input). This module must never log
//! field values.
//!
//! Layout, each module depending only on the ones listed before it:
//! `config` (the YAML settings), `predicate` (the compiled predicate tree's
//! types), `eval` (the [`CompiledFilter`] and how an event is tested),
//! `parse` (turning a [`FilterConfig`] into a [`CompiledFilter`], with
//! path-precise errors) and `processor` (the [`FilterProcessor`]). This
//! facade only declares and re-exports them.

mod config;
mod eval;
mod parse;
mod predicate;
mod processor;

pub use config::{Action, FilterConfig};
pub use eval::CompiledFilter;
pub use processor::FilterProcessor;

#[cfg(test)]
mod tests;

//! `type: mask` — keeps personal data out of downstream systems by
//! dropping, replacing, hashing or truncating columns of chosen tables, in
//! both the before and the after image.
//!
//! ```yaml
//! - type: mask
//!   config:
//!     hmac_secret: "${MASK_SECRET}"   # required when a rule hashes; from the environment
//!     rules:
//!       - table: shop.customers       # db.table pattern with `*`
//!         columns:
//!           email: hash               # HMAC-SHA256(secret, value), lowercase hex
//!           ssn: drop                 # the column disappears
//!           name: { replace: "***" }  # fixed string
//!           phone: { truncate: 4 }    # keep the first 4 characters
//!       - table: "*.*"
//!         columns: { password_hash: drop }
//! ```
//!
//! * `hash` is HMAC-SHA256 keyed with `hmac_secret` over the value's text
//!   (strings as-is, numbers and booleans as JSON text, objects and arrays
//!   as compact JSON), written as 64 lowercase hex digits. The same value
//!   and secret give the same hash in every run and every pipeline, so
//!   hashed columns still join; without the secret, a dictionary attack on
//!   the hashes is not possible (unlike a plain SHA-256).
//! * `truncate: N` keeps the first N Unicode characters of the value's text
//!   (non-strings become strings).
//! * `null` stays `null` in every mode except `drop`: there is nothing to
//!   hide, and `IS NULL` keeps its meaning downstream.
//! * Several rules may match a table; their column actions apply in order.
//!   Column names are exact (case-sensitive). A column absent from a row is
//!   skipped.
//!
//! The secret's key is named `hmac_secret` so that the config crate's
//! redaction masks it whenever a spec is displayed; this module never logs
//! it or any value (its `Debug` output shows `***`). HMAC comes from the
//! RustCrypto `hmac` + `sha2` crates (audited, already in the tree for
//! `sha2`) rather than a hand-written construction.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use deltaforge_core::{BuildError, Columns, ComponentConfig, ConfigProblem, Event, Processor, ProcessorError, Row};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use deltaforge_common::TablePattern;

/// A secret string whose `Debug` output never shows it.
#[derive(Clone, Deserialize, Default, schemars::JsonSchema)]
#[serde(transparent)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
}

/// What to do with one column.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum MaskMode {
    /// Remove the column.
    Drop,
    /// HMAC-SHA256 with `hmac_secret`, lowercase hex.
    Hash,
    /// Replace a non-null value with this string.
    Replace(String),
    /// Keep the first N characters of the value's text.
    Truncate(usize),
}

/// One rule: a table pattern and what to do with its columns.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaskRule {
    /// The tables this rule applies to (`db.table` with `*`).
    pub table: TablePattern,
    /// Column name → mode.
    pub columns: BTreeMap<String, MaskMode>,
}

/// Configuration of a `mask` processor (see the module docs).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaskConfig {
    /// Name in metrics and errors; default `mask`.
    #[serde(default)]
    pub name: Option<String>,
    /// The HMAC key; required when any rule uses `hash`.
    #[serde(default)]
    pub hmac_secret: Option<Secret>,
    /// The rules, applied in order.
    pub rules: Vec<MaskRule>,
}

impl ComponentConfig for MaskConfig {
    /// Checks what serde cannot: a secret when hashing, non-empty rules.
    fn check(&self) -> Result<(), ConfigProblem> {
        if self.rules.is_empty() {
            return Err(ConfigProblem::new(
                "rules",
                "give at least one rule: `- { table: db.table, columns: { col: drop } }`",
            ));
        }
        for (i, r) in self.rules.iter().enumerate() {
            if r.columns.is_empty() {
                return Err(ConfigProblem::new(format!("rules[{i}].columns"), "name at least one column and its mode"));
            }
        }
        let hashes = self.rules.iter().any(|r| r.columns.values().any(|m| *m == MaskMode::Hash));
        if hashes && self.hmac_secret.as_ref().is_none_or(|s| s.0.is_empty()) {
            return Err(ConfigProblem::new(
                "hmac_secret",
                "a rule uses `hash` but no secret is set: add `hmac_secret: \"${MASK_SECRET}\"` and export \
                 MASK_SECRET (32+ random bytes recommended); keep it stable so hashes stay joinable",
            ));
        }
        Ok(())
    }
}

/// HMAC-SHA256 of `data` keyed with `key`, lowercase hex.
///
/// ```
/// // RFC 4231 test case 2.
/// assert_eq!(
///     deltaforge_processors::mask::hmac_hex(b"Jefe", b"what do ya want for nothing?"),
///     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
/// );
/// ```
pub fn hmac_hex(key: &[u8], data: &[u8]) -> String {
    keyed_hmac(key).hex(data)
}

/// HMAC-SHA256 with the key already absorbed: cloning it skips the two
/// key-block compressions every fresh `new_from_slice` would repeat per value.
#[derive(Clone)]
struct KeyedHmac(Hmac<Sha256>);

fn keyed_hmac(key: &[u8]) -> KeyedHmac {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    KeyedHmac(<Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length")))
}

impl KeyedHmac {
    fn hex(&self, data: &[u8]) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut mac = self.0.clone();
        mac.update(data);
        let bytes = mac.finalize().into_bytes();
        let mut out = [0u8; 64];
        for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
            pair[0] = DIGITS[(b >> 4) as usize];
            pair[1] = DIGITS[(b & 15) as usize];
        }
        // Only ASCII hex digits: the check cannot fail.
        std::str::from_utf8(&out).unwrap_or_default().to_owned()
    }
}

fn text_of(v: &Value) -> std::borrow::Cow<'_, str> {
    match v {
        Value::String(s) => std::borrow::Cow::Borrowed(s),
        other => std::borrow::Cow::Owned(other.to_string()),
    }
}

/// The byte offset at which the first `n` characters of `s` end, `None`
/// when `s` has at most `n` characters.
fn char_cut(s: &str, n: usize) -> Option<usize> {
    if s.len() <= n {
        // At most one character per byte.
        return None;
    }
    if s.as_bytes()[..n].is_ascii() {
        // n one-byte characters, and byte n starts the next one.
        return Some(n);
    }
    s.char_indices().nth(n).map(|(cut, _)| cut)
}

/// Applies `shape`'s column actions to `row` (`hmac` is set whenever a rule hashes).
fn mask_row(shape: &Shape, hmac: Option<&KeyedHmac>, row: &mut Row) {
    let values = row.values_mut();
    for (i, mode) in &shape.actions {
        let v = &mut values[*i];
        if v.is_null() {
            continue;
        }
        match mode {
            MaskMode::Drop => {}
            MaskMode::Hash => {
                // `check` guarantees a secret whenever a rule hashes.
                let hashed = hmac.map(|h| h.hex(text_of(v).as_bytes())).unwrap_or_default();
                *v = Value::String(hashed);
            }
            MaskMode::Replace(s) => *v = Value::String(s.clone()),
            MaskMode::Truncate(n) => match v {
                Value::String(s) => {
                    // Already short enough: a string stays as it is.
                    if let Some(cut) = char_cut(s, *n) {
                        s.truncate(cut);
                    }
                }
                other => {
                    let mut text = text_of(other).into_owned();
                    if let Some(cut) = char_cut(&text, *n) {
                        text.truncate(cut);
                    }
                    *other = Value::String(text);
                }
            },
        }
    }
    if let Some((out, kept)) = &shape.drop {
        row.retain_columns(out.clone(), kept);
    }
}

/// The per-table plan: ordered column actions.
type Plan = Arc<[(String, MaskMode)]>;

/// What a plan does to rows with one column list: the column actions by
/// index, in plan order, and, when columns are dropped, the output column
/// list and the indices of the kept values.
struct Shape {
    actions: Vec<(usize, MaskMode)>,
    drop: Option<(Columns, Arc<[usize]>)>,
}

impl Shape {
    fn new(plan: &Plan, columns: &Columns) -> Self {
        let index = |col: &str| columns.iter().position(|c| **c == *col);
        let actions = plan
            .iter()
            .filter(|(_, m)| *m != MaskMode::Drop)
            .filter_map(|(c, m)| Some((index(c)?, m.clone())))
            .collect();
        let dropped: Vec<usize> =
            plan.iter().filter(|(_, m)| *m == MaskMode::Drop).filter_map(|(c, _)| index(c)).collect();
        let drop = (!dropped.is_empty()).then(|| {
            let kept: Arc<[usize]> = (0..columns.len()).filter(|i| !dropped.contains(i)).collect();
            let out: Columns = kept.iter().map(|&i| columns[i].clone()).collect();
            (out, kept)
        });
        Shape { actions, drop }
    }
}

/// A cached shape with the plan and input column list it was made for
/// (held so that their addresses, the cache key, stay unique).
type ShapeEntry = (Plan, Columns, Arc<Shape>);

/// The `mask` processor.
pub struct MaskProcessor {
    name: String,
    /// The keyed HMAC state (`None` when no rule hashes; `check` requires a secret otherwise).
    hmac: Option<KeyedHmac>,
    rules: Vec<MaskRule>,
    /// `(db, table)` → plan (empty when no rule matches).
    plans: HashMap<(Arc<str>, Arc<str>), Plan>,
    /// Shapes by the addresses of their plan and input column list.
    shapes: HashMap<(usize, usize), ShapeEntry>,
    /// The plans of the last few tables, found by the names' addresses.
    recent: Vec<(Arc<str>, Arc<str>, Plan)>,
    /// The shapes (`None`: no rule matches the table) of the last few
    /// tables and column lists, found by the addresses of the names and the
    /// list: an event then costs no hashing and no reference counting.
    fast: Vec<FastEntry>,
}

/// `(db, table, columns, shape)`; see [`MaskProcessor::fast`].
type FastEntry = (Arc<str>, Arc<str>, Columns, Option<Arc<Shape>>);

/// Entries of [`MaskProcessor::fast`] (it forgets the oldest beyond).
const FAST_SHAPES: usize = 16;

/// Tables whose plans are found without hashing.
const RECENT_TABLES: usize = 8;

impl fmt::Debug for MaskProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaskProcessor").field("name", &self.name).field("rules", &self.rules).finish_non_exhaustive()
    }
}

impl MaskProcessor {
    /// Builds the processor; errors as [`MaskConfig::check`].
    pub fn new(cfg: MaskConfig) -> Result<Self, BuildError> {
        cfg.check()?;
        Ok(MaskProcessor {
            name: cfg.name.unwrap_or_else(|| "mask".into()),
            hmac: cfg.hmac_secret.map(|s| keyed_hmac(s.0.as_bytes())),
            rules: cfg.rules,
            plans: HashMap::new(),
            shapes: HashMap::new(),
            recent: Vec::new(),
            fast: Vec::new(),
        })
    }

    /// The index in `fast` of the entry for this table and column list.
    fn fast_index(&mut self, db: &Arc<str>, table: &Arc<str>, columns: &Columns) -> usize {
        let found = self
            .fast
            .iter()
            .position(|(d, t, c, _)| Arc::ptr_eq(c, columns) && Arc::ptr_eq(d, db) && Arc::ptr_eq(t, table));
        if let Some(i) = found {
            return i;
        }
        let plan = self.plan(db, table);
        let shape = (!plan.is_empty()).then(|| self.shape(&plan, columns));
        if self.fast.len() >= FAST_SHAPES {
            self.fast.remove(0);
        }
        self.fast.push((db.clone(), table.clone(), columns.clone(), shape));
        self.fast.len() - 1
    }

    fn plan(&mut self, db: &Arc<str>, table: &Arc<str>) -> Plan {
        // Sources share one `Arc` per table name: comparing addresses skips
        // hashing the names for every event.
        if let Some((_, _, p)) = self.recent.iter().find(|(d, t, _)| Arc::ptr_eq(d, db) && Arc::ptr_eq(t, table)) {
            return p.clone();
        }
        if let Some(p) = self.plans.get(&(db.clone(), table.clone())).cloned() {
            self.remember(db, table, &p);
            return p;
        }
        let plan: Plan = self
            .rules
            .iter()
            .filter(|r| r.table.matches(db, table))
            .flat_map(|r| r.columns.iter().map(|(c, m)| (c.clone(), m.clone())))
            .collect();
        if self.plans.len() > 4096 {
            self.plans.clear();
        }
        self.plans.insert((db.clone(), table.clone()), plan.clone());
        self.remember(db, table, &plan);
        plan
    }

    fn remember(&mut self, db: &Arc<str>, table: &Arc<str>, plan: &Plan) {
        if self.recent.len() >= RECENT_TABLES {
            self.recent.remove(0);
        }
        self.recent.push((db.clone(), table.clone(), plan.clone()));
    }

    fn shape(&mut self, plan: &Plan, columns: &Columns) -> Arc<Shape> {
        let key = (Arc::as_ptr(plan) as *const () as usize, Arc::as_ptr(columns) as *const () as usize);
        if let Some((p, c, shape)) = self.shapes.get(&key) {
            if Arc::ptr_eq(p, plan) && Arc::ptr_eq(c, columns) {
                return shape.clone();
            }
        }
        let shape = Arc::new(Shape::new(plan, columns));
        if self.shapes.len() > 1024 {
            self.shapes.clear();
        }
        self.shapes.insert(key, (plan.clone(), columns.clone(), shape.clone()));
        shape
    }
}

#[async_trait]
impl Processor for MaskProcessor {
    fn name(&self) -> &str {
        &self.name
    }

    async fn process(&mut self, mut events: Vec<Event>) -> Result<Vec<Event>, ProcessorError> {
        for e in events.iter_mut() {
            for row in [e.before.as_mut(), e.after.as_mut()].into_iter().flatten() {
                let i = self.fast_index(&e.source.db, &e.source.table, row.columns());
                if let Some(shape) = &self.fast[i].3 {
                    mask_row(shape, self.hmac.as_ref(), row);
                }
            }
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{after, before, event, insert};
    use deltaforge_core::Op;
    use serde_json::json;

    fn processor(cfg: Value) -> MaskProcessor {
        MaskProcessor::new(serde_json::from_value(cfg).unwrap()).unwrap()
    }

    async fn run(p: &mut MaskProcessor, e: Event) -> Event {
        p.process(vec![e]).await.unwrap().pop().unwrap()
    }

    #[test]
    fn hmac_known_vectors() {
        // RFC 4231 test cases 1 and 2.
        assert_eq!(
            hmac_hex(&[0x0b; 20], b"Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hmac_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[tokio::test]
    async fn every_mode_on_before_and_after() {
        let cfg = json!({"hmac_secret": "Jefe", "rules": [{"table": "shop.cust*", "columns": {
            "email": "hash", "ssn": "drop", "name": {"replace": "***"}, "phone": {"truncate": 4}, "zip": {"truncate": 2}
        }}]});
        let mut p = processor(cfg);
        let row = json!({"id": 1, "email": "what do ya want for nothing?", "ssn": "123-45", "name": "Ada",
                         "phone": "+4412345", "zip": 12345, "note": null});
        let e = run(&mut p, event(Op::Update, "shop.customers", Some(row.clone()), Some(row))).await;
        let want = json!({"id": 1, "email": "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
                          "name": "***", "phone": "+441", "zip": "12", "note": null});
        assert_eq!(after(&e), want);
        assert_eq!(before(&e), want);
        // Column order is kept, minus the dropped column.
        let cols: Vec<&str> = e.after.as_ref().unwrap().columns().iter().map(|c| &**c).collect();
        assert_eq!(cols, ["id", "email", "name", "phone", "zip", "note"]);
    }

    #[tokio::test]
    async fn hash_is_stable_across_instances_and_keyed() {
        let cfg = json!({"hmac_secret": "s3cret-key", "rules": [{"table": "a.b", "columns": {"v": "hash"}}]});
        let mut p1 = processor(cfg.clone());
        let mut p2 = processor(cfg);
        let mut other =
            processor(json!({"hmac_secret": "other", "rules": [{"table": "a.b", "columns": {"v": "hash"}}]}));
        let h = |e: Event| after(&e)["v"].as_str().unwrap().to_string();
        let a = h(run(&mut p1, insert("a.b", json!({"v": "x@y.z"}))).await);
        let b = h(run(&mut p2, insert("a.b", json!({"v": "x@y.z"}))).await);
        let c = h(run(&mut other, insert("a.b", json!({"v": "x@y.z"}))).await);
        assert_eq!(a, b, "a restart (new instance) gives the same hash");
        assert_eq!(a, hmac_hex(b"s3cret-key", b"x@y.z"));
        assert_ne!(a, c, "another secret gives another hash");
        assert_eq!(a.len(), 64);
        // Numbers hash their JSON text.
        let n = h(run(&mut p1, insert("a.b", json!({"v": 42}))).await);
        assert_eq!(n, hmac_hex(b"s3cret-key", b"42"));
    }

    #[tokio::test]
    async fn nulls_truncation_and_unmatched_tables() {
        let mut p = processor(json!({"rules": [
            {"table": "a.b", "columns": {"s": {"truncate": 3}, "r": {"replace": "x"}, "gone": "drop"}}
        ]}));
        let e = run(&mut p, insert("a.b", json!({"s": "héllo wörld", "r": null, "gone": null}))).await;
        assert_eq!(after(&e), json!({"s": "hél", "r": null}), "truncate counts characters; null stays null");
        let e = run(&mut p, insert("a.b", json!({"s": "ab"}))).await;
        assert_eq!(after(&e), json!({"s": "ab"}), "shorter strings and absent columns are untouched");
        let e = run(&mut p, insert("a.other", json!({"s": "hello", "gone": 1}))).await;
        assert_eq!(after(&e), json!({"s": "hello", "gone": 1}), "other tables are untouched");
        let e = run(&mut p, event(Op::Delete, "a.b", Some(json!({"s": "hello", "gone": 1})), None)).await;
        assert_eq!(before(&e), json!({"s": "hel"}));
        assert!(e.after.is_none());
    }

    #[tokio::test]
    async fn drops_share_column_lists_and_rules_apply_in_order() {
        let mut p = processor(json!({"rules": [
            {"table": "a.*", "columns": {"x": "drop"}},
            {"table": "a.b", "columns": {"y": {"replace": "-"}}}
        ]}));
        let cols: Columns = vec![Arc::from("id"), Arc::from("x"), Arc::from("y")].into();
        let mk = |i: i64| {
            let mut e = insert("a.b", json!({}));
            e.after = Some(Row::new(cols.clone(), vec![json!(i), json!("secret"), json!("v")]));
            e
        };
        let out = p.process(vec![mk(1), mk(2)]).await.unwrap();
        assert_eq!(after(&out[0]), json!({"id": 1, "y": "-"}));
        assert_eq!(after(&out[1]), json!({"id": 2, "y": "-"}));
        assert!(Arc::ptr_eq(out[0].after.as_ref().unwrap().columns(), out[1].after.as_ref().unwrap().columns()));
    }

    #[test]
    fn config_errors() {
        let no_secret: MaskConfig =
            serde_json::from_value(json!({"rules": [{"table": "a.b", "columns": {"e": "hash"}}]})).unwrap();
        let ConfigProblem { field, message: msg } = no_secret.check().unwrap_err();
        assert_eq!(field, "hmac_secret");
        assert!(msg.contains("MASK_SECRET"), "{msg}");
        let empty: MaskConfig =
            serde_json::from_value(json!({"hmac_secret": "", "rules": [{"table": "a.b", "columns": {"e": "hash"}}]}))
                .unwrap();
        assert_eq!(empty.check().unwrap_err().field, "hmac_secret");
        let none: MaskConfig = serde_json::from_value(json!({"rules": []})).unwrap();
        assert_eq!(none.check().unwrap_err().field, "rules");
        assert!(serde_json::from_value::<MaskConfig>(
            json!({"rules": [{"table": "a.b", "columns": {"e": {"truncate": -1}}}]})
        )
        .is_err());
        assert!(serde_json::from_value::<MaskConfig>(json!({"rules": [{"table": "ab", "columns": {"e": "drop"}}]}))
            .is_err());
    }

    #[test]
    fn secret_never_in_debug() {
        let cfg: MaskConfig = serde_json::from_value(
            json!({"hmac_secret": "TOPSECRET", "rules": [{"table": "a.b", "columns": {"e": "hash"}}]}),
        )
        .unwrap();
        assert!(!format!("{cfg:?}").contains("TOPSECRET"));
        let p = MaskProcessor::new(cfg).unwrap();
        assert!(!format!("{p:?}").contains("TOPSECRET"));
    }
}

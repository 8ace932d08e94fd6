//! Filter behaviour: each operator, combinators, ops and tables, the
//! processor and its caches, and config error paths.

use std::sync::Arc;

use deltaforge_core::{Columns, ComponentConfig, ConfigProblem, Event, Op, Processor, Row};
use serde_json::Value;

use super::*;
use crate::testutil::{event, insert};
use serde_json::json;

fn filter(cfg: Value) -> CompiledFilter {
    serde_json::from_value::<FilterConfig>(cfg).unwrap().compile().unwrap()
}

fn config_error(cfg: Value) -> ConfigProblem {
    match serde_json::from_value::<FilterConfig>(cfg) {
        Ok(c) => {
            let problem = c.compile().unwrap_err();
            assert_eq!(c.check(), Err(problem.clone()), "check reports what compile does");
            problem
        }
        Err(e) => ConfigProblem::new("", e.to_string()),
    }
}

/// Whether the leaf `{field, op: operand}` matches an insert with `after`.
fn leaf(field: &str, op: &str, operand: Value, after: Value) -> bool {
    filter(json!({"where": {"field": field, op: operand}})).matches(&insert("s.t", after))
}

fn update(before: Value, after: Value) -> Event {
    event(Op::Update, "s.t", Some(before), Some(after))
}

#[test]
fn eq_and_ne() {
    assert!(leaf("after.s", "eq", json!("paid"), json!({"s": "paid"})));
    assert!(!leaf("after.s", "eq", json!("paid"), json!({"s": "new"})));
    assert!(leaf("after.n", "eq", json!(5), json!({"n": 5.0})));
    assert!(leaf("after.amount", "eq", json!(12.5), json!({"amount": "12.50"})));
    assert!(leaf("after.o", "eq", json!({"a": 1}), json!({"o": {"a": 1}})));
    assert!(leaf("after.s", "ne", json!("paid"), json!({"s": "new"})));
    assert!(!leaf("after.s", "ne", json!("paid"), json!({"s": "paid"})));
    // Missing and null fields.
    assert!(!leaf("after.x", "eq", json!("paid"), json!({"s": "paid"})));
    assert!(leaf("after.x", "ne", json!("paid"), json!({"s": "paid"})));
    assert!(leaf("after.x", "eq", Value::Null, json!({"x": null})));
    assert!(!leaf("after.x", "ne", Value::Null, json!({"x": null})));
    assert!(leaf("after.x", "ne", Value::Null, json!({"x": 0})));
}

#[test]
fn ordering_operators() {
    let row = json!({"n": 10, "amount": "99.95", "ts": "2026-01-02T00:00:00Z", "b": true});
    let cases = [
        ("after.n", "gt", json!(9), true),
        ("after.n", "gt", json!(10), false),
        ("after.n", "gte", json!(10), true),
        ("after.n", "gte", json!(10.5), false),
        ("after.n", "lt", json!(10.5), true),
        ("after.n", "lt", json!(10), false),
        ("after.n", "lte", json!(10), true),
        ("after.n", "lte", json!(9), false),
        ("after.amount", "gt", json!(99.9), true),
        ("after.amount", "lt", json!(100), true),
        ("after.ts", "gt", json!("2026-01-01"), true),
        ("after.ts", "lt", json!("2026-01-01"), false),
        ("after.b", "gt", json!(0), false),
        ("after.missing", "lt", json!(100), false),
        ("after.ts", "gt", json!(5), false),
    ];
    for (field, op, operand, want) in cases {
        assert_eq!(leaf(field, op, operand.clone(), row.clone()), want, "{field} {op} {operand}");
    }
}

#[test]
fn in_regex_exists() {
    assert!(leaf("after.s", "in", json!(["paid", "shipped"]), json!({"s": "shipped"})));
    assert!(!leaf("after.s", "in", json!(["paid", "shipped"]), json!({"s": "new"})));
    assert!(leaf("after.n", "in", json!([1, 2, 3]), json!({"n": "2"})));
    assert!(!leaf("after.x", "in", json!([null]), json!({"y": 1})));
    assert!(leaf("after.note", "regex", json!("^VIP"), json!({"note": "VIP order"})));
    assert!(!leaf("after.note", "regex", json!("^VIP"), json!({"note": "a VIP order"})));
    assert!(leaf("after.n", "regex", json!("^4[0-9]$"), json!({"n": 42})));
    assert!(!leaf("after.note", "regex", json!("x"), json!({"note": null})));
    assert!(leaf("after.note", "exists", json!(true), json!({"note": "x"})));
    assert!(!leaf("after.note", "exists", json!(true), json!({"note": null})));
    assert!(!leaf("after.note", "exists", json!(true), json!({})));
    assert!(leaf("after.note", "exists", json!(false), json!({"note": null})));
    assert!(leaf("after.note", "exists", json!(false), json!({})));
    assert!(leaf("after.doc.customer.id", "eq", json!(7), json!({"doc": {"customer": {"id": 7}}})));
    assert!(!leaf("after.doc.customer.id", "exists", json!(true), json!({"doc": "text"})));
}

#[test]
fn changed_only_for_updates() {
    let f = filter(json!({"where": {"field": "status", "changed": true}}));
    assert!(f.matches(&update(json!({"status": "new"}), json!({"status": "paid"}))));
    assert!(!f.matches(&update(json!({"status": "paid"}), json!({"status": "paid"}))));
    assert!(f.matches(&event(Op::Update, "s.t", None, Some(json!({"status": "paid"})))), "no before image");
    assert!(!f.matches(&insert("s.t", json!({"status": "paid"}))));
    let unchanged = filter(json!({"where": {"field": "after.status", "changed": false}}));
    assert!(unchanged.matches(&update(json!({"status": "paid"}), json!({"status": "paid"}))));
    assert!(!unchanged.matches(&update(json!({"status": "new"}), json!({"status": "paid"}))));
}

#[test]
fn current_image_and_before() {
    let del = event(Op::Delete, "s.t", Some(json!({"s": "gone"})), None);
    assert!(filter(json!({"where": {"field": "s", "eq": "gone"}})).matches(&del));
    assert!(filter(json!({"where": {"field": "before.s", "eq": "gone"}})).matches(&del));
    assert!(!filter(json!({"where": {"field": "after.s", "eq": "gone"}})).matches(&del));
    let upd = update(json!({"s": "old"}), json!({"s": "new"}));
    assert!(filter(json!({"where": {"field": "s", "eq": "new"}})).matches(&upd), "current = after");
}

#[test]
fn combinators_nest() {
    let f = filter(json!({"where": {"all": [
        {"field": "after.s", "in": ["paid", "shipped"]},
        {"any": [{"field": "after.n", "gte": 100}, {"field": "after.note", "regex": "^VIP"}]},
        {"not": {"field": "after.test", "eq": true}}
    ]}}));
    assert!(f.matches(&insert("s.t", json!({"s": "paid", "n": 150, "note": null, "test": false}))));
    assert!(f.matches(&insert("s.t", json!({"s": "paid", "n": 5, "note": "VIP x"}))));
    assert!(!f.matches(&insert("s.t", json!({"s": "paid", "n": 5, "note": "x"}))), "any fails");
    assert!(!f.matches(&insert("s.t", json!({"s": "new", "n": 500}))), "all fails");
    assert!(!f.matches(&insert("s.t", json!({"s": "paid", "n": 500, "test": true}))), "not fails");
    assert!(filter(json!({"where": {"all": []}})).matches(&insert("s.t", json!({}))));
    assert!(!filter(json!({"where": {"any": []}})).matches(&insert("s.t", json!({}))));
}

#[test]
fn ops_tables_and_action() {
    let f = filter(json!({"ops": ["c", "delete"], "include": ["shop.order*"], "exclude": ["shop.order_archive"]}));
    assert!(f.matches(&insert("shop.orders", json!({}))));
    assert!(f.matches(&event(Op::Delete, "shop.order_lines", Some(json!({})), None)));
    assert!(!f.matches(&event(Op::Update, "shop.orders", Some(json!({})), Some(json!({})))), "op");
    assert!(!f.matches(&insert("shop.customers", json!({}))), "not included");
    assert!(!f.matches(&insert("shop.order_archive", json!({}))), "excluded");
    assert!(!f.matches(&insert("other.orders", json!({}))), "db differs");

    let drop = filter(json!({"action": "drop", "ops": ["d"]}));
    assert!(drop.keeps(&insert("a.b", json!({}))));
    assert!(!drop.keeps(&event(Op::Delete, "a.b", Some(json!({})), None)));
    let keep = filter(json!({"ops": ["t", "r", "u"]}));
    assert!(keep.keeps(&event(Op::Truncate, "a.b", None, None)));
    assert!(!keep.keeps(&insert("a.b", json!({}))));
}

#[tokio::test]
async fn processor_keeps_order_and_drops_non_matching() {
    let mut p =
        FilterProcessor::new(serde_json::from_value(json!({"where": {"field": "after.n", "gt": 1}})).unwrap()).unwrap();
    let events = (0..5).map(|n| insert("s.t", json!({"n": n}))).collect();
    let out = p.process(events).await.unwrap();
    let ns: Vec<Value> = out.iter().map(|e| e.after.as_ref().unwrap().get("n").unwrap().clone()).collect();
    assert_eq!(ns, vec![json!(2), json!(3), json!(4)]);
    assert_eq!(p.name(), "filter");
}

#[tokio::test]
async fn the_processors_caches_agree_with_plain_matching() {
    // Shared and unshared column lists, differing before/after lists,
    // several tables, ops and images; more lists than the cache keeps.
    let shared: Columns = ["id", "s", "n", "doc"].iter().map(|c| Arc::<str>::from(*c)).collect::<Vec<_>>().into();
    let other: Columns = ["doc", "n", "id"].iter().map(|c| Arc::<str>::from(*c)).collect::<Vec<_>>().into();
    let mut events = Vec::new();
    for i in 0..200i64 {
        let table = ["shop.orders", "shop.order_archive", "other.orders", "shop.order_lines"][(i % 4) as usize];
        let status = ["paid", "new", "shipped"][(i % 3) as usize];
        let doc = json!({"k": i % 5});
        let mut e = match i % 5 {
            0 => insert(table, json!({"id": i, "s": status, "n": i.to_string()})),
            1 => update(json!({"s": "new", "n": i}), json!({"s": status, "n": i, "doc": doc})),
            2 => event(Op::Delete, table, Some(json!({"s": status, "n": format!("{i}.5")})), None),
            _ => insert(table, json!({})),
        };
        if i % 5 == 3 {
            e.after = Some(Row::new(shared.clone(), vec![json!(i), json!(status), json!(i * 3), doc.clone()]));
        }
        if i % 5 == 4 {
            e.after = Some(Row::new(other.clone(), vec![doc, json!(format!("{}.25", i)), json!(i)]));
            e.before = Some(Row::new(shared.clone(), vec![json!(i), json!("new"), json!(i), Value::Null]));
            e.op = Op::Update;
        }
        events.push(e);
    }
    let configs = [
        json!({"include": ["shop.order*"], "exclude": ["shop.order_archive"]}),
        json!({"action": "drop", "ops": ["u", "d"], "where": {"field": "n", "gte": 100}}),
        json!({"where": {"any": [
            {"field": "after.s", "in": ["paid", "shipped"]},
            {"field": "before.s", "in": ["new", 5]},
            {"field": "after.doc.k", "in": [1, 3]},
            {"field": "n", "lt": "150"}
        ]}}),
        json!({"include": ["*.orders", "s.*"], "where": {"all": [
            {"field": "s", "changed": true},
            {"not": {"field": "after.doc.k", "eq": 0}},
            {"field": "after.n", "regex": "^1"}
        ]}}),
        json!({"where": {"field": "after.n", "in": ["5", "12.25", "44"]}}),
    ];
    for cfg in configs {
        let plain = filter(cfg.clone());
        let want: Vec<Event> = events.iter().filter(|e| plain.keeps(e)).cloned().collect();
        assert!(!want.is_empty() && want.len() < events.len(), "{cfg}: a useful case");
        let mut p = FilterProcessor::new(serde_json::from_value(cfg.clone()).unwrap()).unwrap();
        for _ in 0..2 {
            assert_eq!(p.process(events.clone()).await.unwrap(), want, "{cfg}");
        }
    }
}

#[test]
fn config_errors_name_the_path() {
    let cases = [
        (
            json!({"where": {"all": [{"field": "a", "eq": 1}, {"field": "b", "gtt": 2}]}}),
            "where.all[1]",
            "unknown operator `gtt`",
        ),
        (json!({"where": {"any": [{"field": "b", "gt": [1]}]}}), "where.any[0].gt", "number or a string"),
        (json!({"where": {"field": "b", "regex": "("}}), "where.regex", "invalid regex"),
        (json!({"where": {"field": "b", "in": 3}}), "where.in", "must be a list"),
        (json!({"where": {"field": "b", "eq": 1, "ne": 2}}), "where", "exactly one operator"),
        (json!({"where": {"field": "b"}}), "where", "found none"),
        (json!({"where": {"all": {"field": "b"}}}), "where.all", "takes a list"),
        (json!({"where": {"not": {"field": "after", "eq": 1}}}), "where.not.field", "names no column"),
        (json!({"where": {"all": [], "any": []}}), "where", "only key"),
        (json!({"where": {"eq": 1}}), "where", "needs `field:`"),
        (json!({"where": {"field": "x", "exists": "yes"}}), "where.exists", "true or false"),
        (json!({"where": "x > 1"}), "where", "must be a mapping"),
        (json!({"ops": ["c", "upsert"]}), "ops[1]", "unknown op"),
    ];
    for (cfg, field, msg) in cases {
        let ConfigProblem { field: f, message: m } = config_error(cfg.clone());
        assert_eq!(f, field, "{cfg}: {m}");
        assert!(m.contains(msg), "{cfg}: {m}");
    }
    let m = config_error(json!({"include": ["orders"]})).message;
    assert!(m.contains("db.table"), "{m}");
    let m = config_error(json!({"action": "maybe"})).message;
    assert!(m.contains("keep") && m.contains("drop"), "{m}");
}

//! One `postgres` source feeding the four message sinks at once — Kafka
//! (Debezium envelope), Redis Streams (native), NATS JetStream
//! (CloudEvents) and an HTTP webhook (native, batch mode) — against the
//! real servers of `scripts/services`, with the real binary. Inserts,
//! updates (one changing the key) and deletes in several transactions on
//! two fresh tables (one with a composite primary key) are read back with
//! each system's own client (rdkafka consumer, XRANGE, a JetStream client,
//! and an HTTP server in the test that records requests) and compared
//! event by event with the changes the test made: count, op, key, before
//! and after images, routing, envelope fields, per-row commit order, and
//! the idempotency key, which must be the same for one change in every
//! sink.
//!
//! Every name (tables, slot, publication, topics, streams, subjects) is
//! unique to the run, so other tests may use the same servers at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use serde_json::{json, Value};

use crate::support::http_recorder::HttpRecorder;
use crate::support::sinks::{kafka_consume, nats_messages, redis_entries};
use crate::support::{pg_command, pg_lsn, pg_sql, service, storage, unique_suffix, wait_for, Pipeline, RunArgs};

const TENANT: &str = "acme";

// ---------------------------------------------------------------------------
// The changes the test makes, and the events they must produce.

/// A row of the `orders` table (primary key `id`).
#[derive(Clone, Debug)]
struct Order {
    id: i64,
    customer: String,
    amount_cents: i64,
    qty: i32,
    paid: bool,
    note: Option<String>,
    tags: Vec<String>,
    even: bool,
    placed_secs: i64,
}

impl Order {
    fn new(id: i64) -> Order {
        Order {
            id,
            customer: format!("cust-{}", id % 17),
            amount_cents: id * 100 + id % 100,
            qty: (id % 7) as i32,
            paid: false,
            note: (id % 5 != 0).then(|| format!("n{id} héllo 'q'")),
            tags: vec!["a".into(), format!("b{id}")],
            even: id % 2 == 0,
            placed_secs: id,
        }
    }

    fn amount(&self) -> String {
        format!("{}.{:02}", self.amount_cents / 100, self.amount_cents % 100)
    }

    /// Column values as SQL literals, in table order after `id`.
    fn sql_values(&self) -> String {
        let note = self.note.as_ref().map(|n| format!("'{}'", n.replace('\'', "''"))).unwrap_or("NULL".into());
        let tags = self.tags.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
        format!(
            "'{}', {}, {}, {}, {note}, ARRAY[{tags}]::text[], '{{\"i\": {}, \"even\": {}}}', \
             timestamptz '2026-01-01 00:00:00+00' + interval '{} seconds'",
            self.customer,
            self.amount(),
            self.qty,
            self.paid,
            self.id,
            self.even,
            self.placed_secs
        )
    }

    fn insert(&self, table: &str) -> String {
        format!("INSERT INTO {table} VALUES ({}, {});\n", self.id, self.sql_values())
    }

    /// Updates every column of the row whose key is `old_id` to `self`.
    fn update(&self, table: &str, old_id: i64) -> String {
        format!(
            "UPDATE {table} SET (id, customer, amount, qty, paid, note, tags, meta, placed_at) = ({}, {}) WHERE id = {old_id};\n",
            self.id,
            self.sql_values()
        )
    }

    /// The row as the source decodes it.
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "customer": self.customer,
            "amount": self.amount(),
            "qty": self.qty,
            "paid": self.paid,
            "note": self.note,
            "tags": self.tags,
            "meta": {"i": self.id, "even": self.even},
            "placed_at": format!("2026-01-01T00:{:02}:{:02}.000000Z", self.placed_secs / 60, self.placed_secs % 60),
        })
    }
}

/// A row of the `lines` table (primary key `(order_id, line)`).
#[derive(Clone, Debug)]
struct Line {
    order_id: i32,
    line: i32,
    sku: String,
    qty: i16,
}

impl Line {
    fn new(order_id: i32, line: i32) -> Line {
        Line { order_id, line, sku: format!("sku-{order_id}-{line}"), qty: ((order_id + line) % 5) as i16 }
    }

    fn json(&self) -> Value {
        json!({"order_id": self.order_id, "line": self.line, "sku": self.sku, "qty": self.qty})
    }

    fn key(&self) -> Value {
        json!({"order_id": self.order_id, "line": self.line})
    }
}

/// One change as every sink must show it.
#[derive(Clone, Debug, PartialEq)]
struct Change {
    table: String,
    op: &'static str,
    /// The default message key: the primary key columns, compact JSON.
    key: String,
    before: Value,
    after: Value,
}

/// The script of transactions and the changes each must produce, in order.
#[derive(Default)]
struct Workload {
    sql: String,
    txs: Vec<Vec<Change>>,
}

impl Workload {
    /// Starts a transaction (`explicit`: inside BEGIN/COMMIT; otherwise the
    /// next statement is one autocommitted transaction on its own).
    fn begin(&mut self, explicit: bool) {
        if explicit {
            self.sql.push_str("BEGIN;\n");
        }
        self.txs.push(Vec::new());
    }

    fn commit(&mut self, explicit: bool) {
        if explicit {
            self.sql.push_str("COMMIT;\n");
        }
    }

    fn change(&mut self, sql: String, table: &str, op: &'static str, key: Value, before: Value, after: Value) {
        self.sql.push_str(&sql);
        let change = Change { table: table.to_string(), op, key: key.to_string(), before, after };
        self.txs.last_mut().expect("inside a transaction").push(change);
    }

    fn all(&self) -> impl Iterator<Item = ((usize, usize), &Change)> {
        self.txs.iter().enumerate().flat_map(|(t, tx)| tx.iter().enumerate().map(move |(i, c)| ((t, i), c)))
    }
}

/// ~500 changes in 26 transactions: a 200-row insert (larger than one
/// batch), inserts and updates of both tables in one transaction, small
/// transactions that touch one row twice, a bulk update, a key change,
/// bulk deletes and single-statement autocommitted inserts.
fn workload(orders: &str, lines: &str) -> Workload {
    let mut w = Workload::default();
    let mut rows: BTreeMap<i64, Order> = BTreeMap::new();
    let mut items: BTreeMap<(i32, i32), Line> = BTreeMap::new();
    let upd = |w: &mut Workload, rows: &mut BTreeMap<i64, Order>, id: i64, f: &dyn Fn(&mut Order)| {
        let mut r = rows.remove(&id).expect("row exists");
        f(&mut r);
        let before = if r.id == id { Value::Null } else { json!({"id": id}) };
        w.change(r.update(orders, id), orders, "u", json!({"id": r.id}), before, r.json());
        rows.insert(r.id, r);
    };
    let del_order = |w: &mut Workload, rows: &mut BTreeMap<i64, Order>, id: i64| {
        rows.remove(&id).expect("row exists");
        let key = json!({"id": id});
        w.change(format!("DELETE FROM {orders} WHERE id = {id};\n"), orders, "d", key.clone(), key, Value::Null);
    };
    let del_line = |w: &mut Workload, items: &mut BTreeMap<(i32, i32), Line>, o: i32, l: i32| {
        let key = items.remove(&(o, l)).expect("line exists").key();
        let sql = format!("DELETE FROM {lines} WHERE order_id = {o} AND line = {l};\n");
        w.change(sql, lines, "d", key.clone(), key, Value::Null);
    };

    // T1: 200 inserts in one transaction.
    w.begin(true);
    for id in 1..=200 {
        let r = Order::new(id);
        w.change(r.insert(orders), orders, "c", json!({"id": id}), Value::Null, r.json());
        rows.insert(id, r);
    }
    w.commit(true);
    // T2: both tables in one transaction.
    w.begin(true);
    for o in 1..=40 {
        for l in 1..=2 {
            let line = Line::new(o, l);
            let sql = format!("INSERT INTO {lines} VALUES ({o}, {l}, '{}', {});\n", line.sku, line.qty);
            w.change(sql, lines, "c", line.key(), Value::Null, line.json());
            items.insert((o, l), line);
        }
        upd(&mut w, &mut rows, i64::from(o), &|r| r.qty += 100);
    }
    w.commit(true);
    // T3–T12: small transactions touching one order twice and one line.
    for k in 1..=10 {
        w.begin(true);
        upd(&mut w, &mut rows, k, &|r| {
            r.paid = true;
            r.amount_cents += 100;
        });
        upd(&mut w, &mut rows, k, &|r| r.note = Some(format!("again {}", r.id)));
        del_line(&mut w, &mut items, k as i32, 2);
        w.commit(true);
    }
    // T13: a bulk update.
    w.begin(true);
    for id in (3..=198).step_by(3) {
        upd(&mut w, &mut rows, id, &|r| r.paid = true);
    }
    w.commit(true);
    // T14: the primary key changes (autocommit).
    w.begin(false);
    upd(&mut w, &mut rows, 199, &|r| r.id = 1199);
    // T15: bulk deletes.
    w.begin(true);
    for id in (151..=198).chain([200]) {
        del_order(&mut w, &mut rows, id);
    }
    w.commit(true);
    // T16: deletes of the other table.
    w.begin(true);
    for o in 11..=20 {
        for l in 1..=2 {
            del_line(&mut w, &mut items, o, l);
        }
    }
    w.commit(true);
    // T17–T26: single-statement transactions.
    for id in 301..=310 {
        w.begin(false);
        let r = Order::new(id);
        w.change(r.insert(orders), orders, "c", json!({"id": id}), Value::Null, r.json());
        rows.insert(id, r);
    }
    w
}

// ---------------------------------------------------------------------------
// What each sink delivered, reduced to one shape.

/// One delivered event.
#[derive(Debug, Clone)]
struct Seen {
    /// Where it was routed: topic, stream, subject or URL path.
    route: String,
    /// Kafka partition (0 elsewhere).
    partition: i32,
    change: Change,
    /// The source transaction id (xid) and the event's index in it.
    xid: u64,
    index: u64,
    /// The idempotency key the sink carries (Kafka: the `id` header).
    idem: Option<String>,
    /// LSN of the change.
    lsn: u64,
    /// Commit time.
    ts_ms: i64,
}

fn op_of(v: &Value) -> &'static str {
    match v.as_str().expect("op string") {
        "c" => "c",
        "u" => "u",
        "d" => "d",
        other => panic!("unexpected op {other:?}"),
    }
}

/// Reads a native envelope, checking the fields that do not depend on the change.
fn from_native(v: &Value, route: String, key: String, src: &str, pipeline: &str) -> Seen {
    let s = &v["source"];
    assert_eq!(s["connector"], "postgres", "{v}");
    assert_eq!(s["source_id"], src, "{v}");
    assert_eq!(s["pipeline"], pipeline, "{v}");
    assert_eq!(s["tenant"], TENANT, "{v}");
    assert_eq!(s["db"], "public", "{v}");
    assert_eq!(v["schema_version"], 1, "{v}");
    let xid = s["position"]["tx_id"].as_u64().expect("position.tx_id");
    assert_eq!(v["tx_id"], xid.to_string(), "{v}");
    let idem = v["id"].as_str().expect("id").to_string();
    let index = idem.rsplit_once(':').and_then(|(_, i)| i.parse().ok()).unwrap_or_else(|| panic!("id {idem}"));
    Seen {
        route,
        partition: 0,
        change: Change {
            table: s["table"].as_str().unwrap().to_string(),
            op: op_of(&v["op"]),
            key,
            before: v["before"].clone(),
            after: v["after"].clone(),
        },
        xid,
        index,
        idem: Some(idem),
        lsn: pg_lsn(s["position"]["lsn"].as_str().expect("position.lsn")),
        ts_ms: s["ts_ms"].as_i64().expect("ts_ms"),
    }
}

/// Kafka: every message of `topics` from the beginning (the harness's
/// Kafka reader) as `(topic, partition, key, id header, value)`.
fn kafka_read(
    brokers: &str,
    topics: &[String],
    expect: usize,
    timeout: Duration,
) -> Vec<(String, i32, String, String, Value)> {
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    kafka_consume(brokers, &topics, false, expect, timeout)
        .into_iter()
        .map(|m| {
            let id = m.id_header.unwrap_or_else(|| panic!("no `id` header on a message of {}", m.topic));
            (m.topic, m.partition, m.key.expect("message key"), id, m.value.expect("no tombstones configured"))
        })
        .collect()
}

/// NATS: every message of a JetStream stream (the harness's NATS reader) as
/// `(subject, headers Nats-Msg-Id/op/key/Content-Type, payload)`.
fn nats_read(url: &str, name: &str) -> Vec<(String, HashMap<String, String>, Value)> {
    nats_messages(url, name)
        .into_iter()
        .map(|m| {
            let headers = ["Nats-Msg-Id", "op", "key", "Content-Type"]
                .iter()
                .filter_map(|k| m.headers.get(*k).map(|v| (k.to_string(), v.as_str().to_string())))
                .collect();
            (m.subject, headers, m.payload)
        })
        .collect()
}

/// The webhook's events so far (the bodies are arrays in batch mode).
fn hook_events(hook: &HttpRecorder) -> usize {
    hook.received().iter().map(|r| r.body.as_array().map_or(0, Vec::len)).sum()
}

// ---------------------------------------------------------------------------
// Comparing a sink's events with the workload.

/// Checks one sink's events against the workload: each change exactly
/// once (no loss, no duplicate, nothing extra), with its op, key and
/// images; in commit order within every route/partition (so per row);
/// the idempotency key identical to the reference sink's for the same
/// change. `tx_of` maps a transaction id to its place in the workload.
fn check_sink(
    sink: &str,
    seen: &[Seen],
    w: &Workload,
    tx_of: &HashMap<u64, usize>,
    reference: &BTreeMap<(usize, usize), Seen>,
) {
    let expected: usize = w.txs.iter().map(Vec::len).sum();
    assert_eq!(seen.len(), expected, "{sink}: number of events");
    let mut got: BTreeSet<(usize, usize)> = BTreeSet::new();
    let mut last: HashMap<(&str, i32), (usize, usize)> = HashMap::new();
    for s in seen {
        let tx = *tx_of.get(&s.xid).unwrap_or_else(|| panic!("{sink}: unknown transaction {} in {s:?}", s.xid));
        let at = (tx, s.index as usize);
        let want = w.txs[tx].get(at.1).unwrap_or_else(|| panic!("{sink}: no change {at:?} in the workload: {s:?}"));
        assert_eq!(&s.change, want, "{sink}: change {at:?} (transaction {tx}, index {})", at.1);
        assert!(got.insert(at), "{sink}: change {at:?} delivered twice");
        if let Some(prev) = last.insert((s.route.as_str(), s.partition), at) {
            assert!(prev < at, "{sink}: {} out of commit order: {prev:?} then {at:?}", s.route);
        }
        let r = &reference[&at];
        assert_eq!(s.lsn, r.lsn, "{sink}: LSN of change {at:?}");
        assert_eq!(s.ts_ms, r.ts_ms, "{sink}: commit time of change {at:?}");
        if s.idem.is_some() {
            assert_eq!(s.idem, r.idem, "{sink}: idempotency key of change {at:?}");
        }
    }
    // Per row: the ops in commit order, as made.
    let mut per_key_seen: BTreeMap<(String, String), Vec<&'static str>> = BTreeMap::new();
    let mut ordered: Vec<&Seen> = seen.iter().collect();
    ordered.sort_by_key(|s| (tx_of[&s.xid], s.index));
    for s in ordered {
        per_key_seen.entry((s.change.table.clone(), s.change.key.clone())).or_default().push(s.change.op);
    }
    let mut per_key_made: BTreeMap<(String, String), Vec<&'static str>> = BTreeMap::new();
    for (_, c) in w.all() {
        per_key_made.entry((c.table.clone(), c.key.clone())).or_default().push(c.op);
    }
    assert_eq!(per_key_seen, per_key_made, "{sink}: ops per row");
}

/// Removes what the test created on the shared servers — replication
/// slot (which would otherwise hold WAL for ever), publication, tables,
/// Redis streams, the JetStream stream and the Kafka topics — also when an
/// assertion failed. Best effort: it never panics (a panic while
/// unwinding would abort the test binary).
struct Cleanup {
    pg_url: String,
    slot: String,
    tables: Vec<String>,
    redis_uri: String,
    redis_streams: Vec<String>,
    nats_url: String,
    js_stream: String,
    brokers: String,
    topics: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let psql = |sql: &str| {
            pg_command(&self.pg_url)
                .arg("-c")
                .arg(sql)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        // The walsender may hold the slot a moment after the binary exited.
        let active = format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}' AND active_pid IS NOT NULL",
            self.slot
        );
        let released = wait_for(Duration::from_secs(20), || psql(&active).ok().filter(|o| o.trim() == "0").map(|_| ()));
        if released.is_none() {
            eprintln!("cleanup: slot {} still active; not dropped", self.slot);
        }
        let _ = psql(&format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{}' AND active_pid IS NULL",
            self.slot
        ));
        let _ = psql(&format!("DROP PUBLICATION IF EXISTS {}", self.slot));
        let _ = psql(&format!("DROP TABLE IF EXISTS {}", self.tables.join(", ")));
        if let Ok(mut c) = redis::Client::open(self.redis_uri.as_str()).and_then(|c| c.get_connection()) {
            let _: Result<(), _> = redis::cmd("DEL").arg(&self.redis_streams).query(&mut c);
        }
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            rt.block_on(async {
                if let Ok(client) = async_nats::connect(&self.nats_url).await {
                    let _ = jetstream::new(client).delete_stream(&self.js_stream).await;
                }
                let admin: Result<AdminClient<DefaultClientContext>, _> =
                    ClientConfig::new().set("bootstrap.servers", &self.brokers).create();
                if let Ok(admin) = admin {
                    let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
                    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
                    let _ = admin.delete_topics(&topics, &opts).await;
                }
            });
        }
    }
}

/// `2026-11-27T17:08:55.123Z` for milliseconds since the epoch (UTC).
fn rfc3339_millis(ms: i64) -> String {
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{milli:03}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

fn write_script(dir: &Path, sql: &str) -> std::path::PathBuf {
    let p = dir.join("workload.sql");
    std::fs::write(&p, sql).unwrap();
    p
}

#[test]
fn postgres_changes_reach_kafka_redis_nats_and_http_with_their_envelopes_keys_and_routing() {
    let url = service("postgres");
    let brokers = service("kafka");
    let redis_uri = service("redis");
    let nats_url = service("nats");
    let (hook, base) = HttpRecorder::start();
    let started = Instant::now();

    let s = unique_suffix();
    let (orders, lines) = (format!("sfp_{s}_orders"), format!("sfp_{s}_lines"));
    let slot = format!("sfp_{s}");
    let name = format!("sfp-{s}");
    let (topic_prefix, stream_prefix, subject_prefix, js_stream) =
        (format!("sfp-{s}"), format!("sfp:{s}"), format!("sfp{s}"), format!("SFP{s}"));
    let topics: Vec<String> = [&orders, &lines].iter().map(|t| format!("{topic_prefix}.public.{t}")).collect();
    let redis_streams: Vec<String> = [&orders, &lines].iter().map(|t| format!("{stream_prefix}:public:{t}")).collect();
    let _cleanup = Cleanup {
        pg_url: url.clone(),
        slot: slot.clone(),
        tables: vec![orders.clone(), lines.clone()],
        redis_uri: redis_uri.clone(),
        redis_streams: redis_streams.clone(),
        nats_url: nats_url.clone(),
        js_stream: js_stream.clone(),
        brokers: brokers.clone(),
        topics: topics.clone(),
    };
    pg_sql(
        &url,
        &format!(
            "CREATE TABLE {orders} (id bigint PRIMARY KEY, customer text NOT NULL, amount numeric(10,2), qty int,
               paid bool, note text, tags text[], meta jsonb, placed_at timestamptz);
             CREATE TABLE {lines} (order_id int, line int, sku text, qty smallint, PRIMARY KEY (order_id, line));"
        ),
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = Pipeline::new(&name)
        .tenant(TENANT)
        .source(
            "postgres",
            json!({ "id": name, "dsn": url, "tables": [format!("public.sfp_{s}_*")], "slot": slot, "publication": slot }),
        )
        .sink(
            "kafka",
            json!({ "id": "kafka", "brokers": brokers, "topic": format!("{topic_prefix}.${{db}}.${{table}}"), "envelope": "debezium" }),
        )
        .sink("redis", json!({ "id": "redis", "uri": redis_uri, "stream": format!("{stream_prefix}:${{db}}:${{table}}") }))
        .sink(
            "nats",
            json!({
                "id": "nats", "url": nats_url, "subject": format!("{subject_prefix}.${{db}}.${{table}}.${{op}}"),
                "stream": js_stream, "create_stream": true, "envelope": "cloudevents",
            }),
        )
        .sink("http", json!({ "id": "http", "url": format!("{base}/hook/${{tenant}}/${{db}}/${{table}}"), "batch_mode": "batch" }))
        .batch(100, 20)
        .commit_policy("all")
        .write(dir.path().join("pipeline.yaml"));
    let db = dir.path().join("df.db");
    let mut df = RunArgs::new(&cfg, &db).start(&dir.path().join("df.log"), &[("RUST_LOG", "info")]);
    df.wait_pg_streaming();
    df.wait_snapshot_over();

    let w = workload(&orders, &lines);
    let total: usize = w.txs.iter().map(Vec::len).sum();
    assert!((450..=550).contains(&total) && w.txs.len() == 26, "{total} changes in {} transactions", w.txs.len());
    let script = write_script(dir.path(), &w.sql);
    let out = pg_command(&url).arg("-f").arg(&script).output().expect("psql");
    assert!(out.status.success(), "workload failed: {}", String::from_utf8_lossy(&out.stderr));

    // Everything delivered: the webhook has every event, and the checkpoint
    // (which waits for all four sinks) reached the last commit.
    wait_for(Duration::from_secs(90), || (hook_events(&hook) >= total).then_some(()))
        .unwrap_or_else(|| panic!("the webhook got {} of {total} events\n{}", hook_events(&hook), df.log_text()));
    let last_commit = hook
        .received()
        .iter()
        .flat_map(|r| r.body.as_array().cloned().unwrap_or_default())
        .map(|e| pg_lsn(e["id"].as_str().unwrap().split(':').nth(1).unwrap()))
        .max()
        .unwrap();
    let cp = wait_for(Duration::from_secs(60), || {
        storage::checkpoint(&db, &name)
            .filter(|c| c["position"]["lsn"].as_str().is_some_and(|l| pg_lsn(l) >= last_commit))
    })
    .unwrap_or_else(|| panic!("the checkpoint did not reach {last_commit:X}: {:?}", storage::checkpoint(&db, &name)));
    for sink in ["kafka", "redis", "nats", "http"] {
        let at = cp["sinks"][sink]["lsn"].as_str().unwrap_or_else(|| panic!("no position of sink {sink} in {cp}"));
        assert!(pg_lsn(at) >= last_commit, "sink {sink} acknowledged up to {at} only: {cp}");
    }
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
    eprintln!("{total} changes in {} transactions delivered in {:?}", w.txs.len(), started.elapsed());

    // ---- Redis (native envelope): the reference for ids, LSNs, times.
    let mut redis_seen = Vec::new();
    for (table, stream) in [&orders, &lines].into_iter().zip(&redis_streams) {
        for e in redis_entries(&redis_uri, stream) {
            let v: Value = serde_json::from_str(&e["value"]).expect("value is JSON");
            let key = e.get("key").unwrap_or_else(|| panic!("no key field: {e:?}")).clone();
            let seen = from_native(&v, stream.clone(), key, &name, &name);
            assert_eq!(e["id"], seen.idem.clone().unwrap(), "the id field is the envelope's id");
            assert_eq!(e["op"], seen.change.op);
            assert_eq!(&seen.change.table, table, "{stream} holds an event of another table");
            redis_seen.push(seen);
        }
    }
    // Transactions in commit order: distinct commit LSNs from the ids.
    let mut commits: BTreeMap<u64, u64> = BTreeMap::new();
    for s in &redis_seen {
        let id = s.idem.as_deref().unwrap();
        let parts: Vec<&str> = id.split(':').collect();
        assert_eq!(parts.len(), 3, "idempotency key {id}");
        assert_eq!(parts[0], name);
        let commit = pg_lsn(parts[1]);
        assert!(s.lsn <= commit, "change LSN {:X} after its commit {commit:X}", s.lsn);
        if let Some(x) = commits.insert(commit, s.xid) {
            assert_eq!(x, s.xid, "one commit LSN, two transactions");
        }
    }
    assert_eq!(commits.len(), w.txs.len(), "transactions seen in Redis");
    let tx_of: HashMap<u64, usize> = commits.values().enumerate().map(|(i, x)| (*x, i)).collect();
    assert_eq!(tx_of.len(), w.txs.len(), "one xid per transaction");
    let reference: BTreeMap<(usize, usize), Seen> =
        redis_seen.iter().map(|s| ((tx_of[&s.xid], s.index as usize), s.clone())).collect();
    for (tx, changes) in w.txs.iter().enumerate() {
        let ts: BTreeSet<i64> = (0..changes.len()).map(|i| reference[&(tx, i)].ts_ms).collect();
        assert_eq!(ts.len(), 1, "transaction {tx}: one commit time for all its events");
    }
    assert_eq!(rfc3339_millis(1_767_225_600_007), "2026-01-01T00:00:00.007Z");
    assert_eq!(rfc3339_millis(951_825_600_000), "2000-02-29T12:00:00.000Z");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!(reference.values().all(|s| (now_ms - s.ts_ms).abs() < 600_000), "commit times are not recent");
    check_sink("redis", &redis_seen, &w, &tx_of, &reference);

    // ---- NATS JetStream (CloudEvents), one stream for every subject.
    let msgs = nats_read(&nats_url, &js_stream);
    let mut nats_seen = Vec::new();
    for (subject, headers, ce) in &msgs {
        let data = &ce["data"];
        let key = headers.get("key").unwrap_or_else(|| panic!("no key header on {subject}")).clone();
        let seen = from_native(data, subject.clone(), key, &name, &name);
        let (table, op) = (&seen.change.table, seen.change.op);
        assert_eq!(subject, &format!("{subject_prefix}.public.{table}.{op}"), "subject");
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["id"], seen.idem.clone().unwrap(), "CloudEvents id = the idempotency key");
        assert_eq!(headers["Nats-Msg-Id"], seen.idem.clone().unwrap(), "Nats-Msg-Id = the idempotency key");
        assert_eq!(headers["op"], op);
        assert_eq!(headers["Content-Type"], "application/cloudevents+json");
        assert_eq!(ce["source"], format!("/deltaforge/{TENANT}/{name}"));
        let kind = match op {
            "c" => "created",
            "u" => "updated",
            _ => "deleted",
        };
        assert_eq!(ce["type"], format!("io.deltaforge.change.{kind}"));
        assert_eq!(ce["subject"], format!("public.{table}"));
        assert_eq!(ce["datacontenttype"], "application/json");
        assert_eq!(ce["time"], rfc3339_millis(seen.ts_ms), "CloudEvents time = the commit time");
        // A stream keeps one order across its subjects: commit order.
        nats_seen.push(Seen { route: js_stream.clone(), ..seen });
    }
    check_sink("nats", &nats_seen, &w, &tx_of, &reference);

    // ---- HTTP (native, one JSON array per batch and URL).
    let mut http_seen = Vec::new();
    for r in hook.received() {
        assert_eq!(r.header("content-type"), "application/json");
        let events = r.body.as_array().unwrap_or_else(|| panic!("body is not a JSON array: {}", r.body));
        assert!(!events.is_empty(), "empty batch posted to {}", r.path);
        for v in events {
            // The webhook's native envelope carries no message key: derive
            // it from the images like the other sinks' readers get it.
            let key = match v["source"]["table"].as_str() {
                Some(t) if t == lines => {
                    let row = if v["after"].is_null() { &v["before"] } else { &v["after"] };
                    json!({"order_id": row["order_id"], "line": row["line"]}).to_string()
                }
                _ => {
                    json!({"id": if v["after"].is_null() { &v["before"]["id"] } else { &v["after"]["id"] }}).to_string()
                }
            };
            let seen = from_native(v, r.path.clone(), key, &name, &name);
            assert_eq!(r.path, format!("/hook/{TENANT}/public/{}", seen.change.table), "URL");
            http_seen.push(seen);
        }
    }
    let requests = hook.received().len();
    assert!(requests < total / 5, "{requests} requests for {total} events: no batching");
    eprintln!("http: {total} events in {requests} requests");
    check_sink("http", &http_seen, &w, &tx_of, &reference);

    // ---- Kafka (Debezium envelope, schemas.enable=false), keyed by the primary key.
    let msgs = kafka_read(&brokers, &topics, total + 1, Duration::from_secs(60));
    let mut kafka_seen = Vec::new();
    // The key change (T14) arrives as Debezium sends it: a delete keyed by
    // the old key (its `id` header suffixed), then a create keyed by the new
    // one; folded back into the one update the other sinks show.
    let mut key_change_delete: Option<(String, String, Value)> = None;
    let mut key_changes = 0;
    for (topic, partition, key, id, mut v) in msgs {
        if let Some(event_id) = id.strip_suffix(":key-change-delete") {
            assert_eq!(v["op"], "d", "the first half of a key change is a delete: {v}");
            assert_eq!(v["after"], Value::Null, "{v}");
            assert!(key_change_delete.is_none(), "two key-change deletes in a row");
            key_change_delete = Some((event_id.to_string(), key, v["before"].clone()));
            continue;
        }
        if let Some((event_id, old_key, before)) = key_change_delete.take() {
            assert_eq!(id, event_id, "the create follows its delete at once");
            assert_eq!(v["op"], "c", "the second half of a key change is a create: {v}");
            assert_eq!(v["before"], Value::Null, "{v}");
            assert_ne!(old_key, key, "the delete is keyed by the old key, the create by the new one");
            assert_eq!(old_key, before.to_string(), "old key = the old key columns");
            v["op"] = json!("u");
            v["before"] = before;
            key_changes += 1;
        }
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["before", "after", "source", "op", "ts_ms", "transaction"], "{v}");
        let src = &v["source"];
        let source_keys: Vec<&str> = src.as_object().unwrap().keys().map(String::as_str).collect();
        let pg_source = ["version", "connector", "name", "ts_ms", "snapshot", "db", "sequence", "schema", "table"];
        assert_eq!(source_keys, [&pg_source[..], &["txId", "lsn", "xmin"]].concat(), "{v}");
        assert_eq!(src["connector"], "postgresql", "{v}");
        assert_eq!(src["name"], name.as_str());
        assert_eq!(src["schema"], "public");
        assert_eq!(src["db"], "public");
        assert_eq!(src["snapshot"], "false");
        let table = src["table"].as_str().unwrap().to_string();
        assert_eq!(topic, format!("{topic_prefix}.public.{table}"), "topic");
        let xid = src["txId"].as_u64().expect("source.txId");
        assert_eq!(v["transaction"]["id"], xid.to_string());
        let order = v["transaction"]["total_order"].as_u64().expect("transaction.total_order");
        assert!(v["ts_ms"].is_i64());
        kafka_seen.push(Seen {
            route: topic,
            partition,
            change: Change { table, op: op_of(&v["op"]), key, before: v["before"].clone(), after: v["after"].clone() },
            xid,
            index: order - 1,
            // Debezium's envelope has no id: the sink sends it as the `id` header.
            idem: Some(id),
            lsn: src["lsn"].as_u64().expect("source.lsn"),
            ts_ms: src["ts_ms"].as_i64().expect("source.ts_ms"),
        });
    }
    assert!(key_change_delete.is_none(), "a key-change delete without its create");
    assert_eq!(key_changes, 1, "the workload's one key change arrives split in two");
    check_sink("kafka", &kafka_seen, &w, &tx_of, &reference);

    eprintln!("checked 4 sinks x {total} events in {:?}", started.elapsed());
}

//! The conformance suite every [`StorageBackend`] must pass.
//!
//! Compiled for this crate's own tests and, with the `conformance` cargo
//! feature, for the tests of the backend crates (enable it in their
//! `[dev-dependencies]` only). Each case is a plain async function taking a
//! fresh, empty store; the [`all_conformance_tests!`] macro turns every case
//! into one `#[tokio::test]` in the module of the backend under test (that
//! crate needs `tokio` with the `macros` and `rt-multi-thread` features).
//!
//! This module owns only the expected semantics of the trait; it must never
//! reach into a backend's internals, and never be enabled outside tests.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;

use crate::{CasOutcome, StorageBackend, StorageError, Versioned};

/// Generates one multi-threaded `#[tokio::test]` per conformance case.
///
/// `$make` is an async fn returning `(Arc<dyn StorageBackend>, guard)`; the
/// guard (e.g. a temporary directory) is kept alive for the whole case.
///
/// ```ignore
/// async fn make_store() -> (Arc<dyn StorageBackend>, TempDir) { /* a fresh, empty store */ }
/// deltaforge_storage::conformance::all_conformance_tests!(make_store);
/// ```
#[macro_export]
macro_rules! all_conformance_tests {
    ($make:path) => {
        $crate::conformance::all_conformance_tests!(@cases $make;
            kv_put_get_overwrite_delete,
            kv_list_by_prefix_is_ordered,
            kv_namespaces_are_isolated,
            kv_ttl_expires,
            log_sequence_is_global_and_strictly_increasing,
            log_read_filters_by_prefix_and_after_seq,
            slot_versions_and_conflicts,
            slot_cas_concurrent_writers_exactly_one_wins,
            queue_is_bounded,
            queue_is_ordered_with_explicit_ack,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (store, _guard) = $make().await;
                $crate::conformance::$case(store).await;
            }
        )*
    };
}

pub use crate::all_conformance_tests;

pub async fn kv_put_get_overwrite_delete(store: Arc<dyn StorageBackend>) {
    assert_eq!(store.kv_get("checkpoints", "pg-orders").await.unwrap(), None);
    store.kv_put("checkpoints", "pg-orders", r#"{"lsn":"0/1"}"#, None).await.unwrap();
    assert_eq!(store.kv_get("checkpoints", "pg-orders").await.unwrap().as_deref(), Some(r#"{"lsn":"0/1"}"#));

    store.kv_put("checkpoints", "pg-orders", r#"{"lsn":"0/2"}"#, None).await.unwrap();
    assert_eq!(store.kv_get("checkpoints", "pg-orders").await.unwrap().as_deref(), Some(r#"{"lsn":"0/2"}"#));

    // Values are opaque text, including empty and non-ASCII.
    store.kv_put("checkpoints", "empty", "", None).await.unwrap();
    assert_eq!(store.kv_get("checkpoints", "empty").await.unwrap().as_deref(), Some(""));
    store.kv_put("checkpoints", "unicode", "ünïcødé ✓", None).await.unwrap();
    assert_eq!(store.kv_get("checkpoints", "unicode").await.unwrap().as_deref(), Some("ünïcødé ✓"));

    assert!(store.kv_delete("checkpoints", "pg-orders").await.unwrap());
    assert_eq!(store.kv_get("checkpoints", "pg-orders").await.unwrap(), None);
    assert!(!store.kv_delete("checkpoints", "pg-orders").await.unwrap());
    assert!(!store.kv_delete("no-such-namespace", "pg-orders").await.unwrap());
}

pub async fn kv_list_by_prefix_is_ordered(store: Arc<dyn StorageBackend>) {
    for key in ["b/2", "a/1", "b/10", "b/1", "c", "b", "bb/1"] {
        store.kv_put("ns", key, &format!("v-{key}"), None).await.unwrap();
    }
    let listed = store.kv_list("ns", "b/").await.unwrap();
    let expected: Vec<(String, String)> =
        ["b/1", "b/10", "b/2"].iter().map(|k| (k.to_string(), format!("v-{k}"))).collect();
    assert_eq!(listed, expected);

    let keys: Vec<String> = store.kv_list("ns", "b").await.unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["b", "b/1", "b/10", "b/2", "bb/1"]);

    let all: Vec<String> = store.kv_list("ns", "").await.unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(all, ["a/1", "b", "b/1", "b/10", "b/2", "bb/1", "c"]);

    assert!(store.kv_list("ns", "zzz").await.unwrap().is_empty());
    assert!(store.kv_list("other", "").await.unwrap().is_empty());
}

pub async fn kv_namespaces_are_isolated(store: Arc<dyn StorageBackend>) {
    store.kv_put("checkpoints", "k", "cp", None).await.unwrap();
    store.kv_put("leases", "k", "lease", None).await.unwrap();
    assert_eq!(store.kv_get("checkpoints", "k").await.unwrap().as_deref(), Some("cp"));
    assert_eq!(store.kv_get("leases", "k").await.unwrap().as_deref(), Some("lease"));
    assert_eq!(store.kv_list("checkpoints", "").await.unwrap(), vec![("k".to_string(), "cp".to_string())]);

    assert!(store.kv_delete("leases", "k").await.unwrap());
    assert_eq!(store.kv_get("leases", "k").await.unwrap(), None);
    assert_eq!(store.kv_get("checkpoints", "k").await.unwrap().as_deref(), Some("cp"));
}

pub async fn kv_ttl_expires(store: Arc<dyn StorageBackend>) {
    let ttl = Some(Duration::from_millis(50));
    store.kv_put("leases", "short", "a", ttl).await.unwrap();
    store.kv_put("leases", "short-deleted", "b", ttl).await.unwrap();
    store.kv_put("leases", "renewed", "c", ttl).await.unwrap();
    store.kv_put("leases", "forever", "d", None).await.unwrap();
    store.kv_put("leases", "long", "e", Some(Duration::from_secs(3600))).await.unwrap();
    assert_eq!(store.kv_get("leases", "short").await.unwrap().as_deref(), Some("a"));
    assert_eq!(store.kv_list("leases", "").await.unwrap().len(), 5);

    // Overwriting without a TTL removes the deadline.
    store.kv_put("leases", "renewed", "c2", None).await.unwrap();

    tokio::time::sleep(Duration::from_millis(150)).await;

    assert_eq!(store.kv_get("leases", "short").await.unwrap(), None);
    assert!(!store.kv_delete("leases", "short-deleted").await.unwrap(), "an expired key does not exist");
    assert_eq!(store.kv_get("leases", "renewed").await.unwrap().as_deref(), Some("c2"));
    assert_eq!(store.kv_get("leases", "forever").await.unwrap().as_deref(), Some("d"));
    assert_eq!(store.kv_get("leases", "long").await.unwrap().as_deref(), Some("e"));
    let keys: Vec<String> = store.kv_list("leases", "").await.unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["forever", "long", "renewed"]);

    // An expired key can be written again.
    store.kv_put("leases", "short", "again", ttl).await.unwrap();
    assert_eq!(store.kv_get("leases", "short").await.unwrap().as_deref(), Some("again"));
}

pub async fn log_sequence_is_global_and_strictly_increasing(store: Arc<dyn StorageBackend>) {
    let mut last = 0;
    for i in 0..20 {
        let namespace = if i % 2 == 0 { "schemas" } else { "audit" };
        let key = format!("table-{}", i % 3);
        let seq = store.log_append(namespace, &key, &format!("v{i}")).await.unwrap();
        assert!(seq > last, "sequence {seq} is not greater than {last}");
        last = seq;
    }

    // Concurrent appends still get distinct, increasing numbers.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.log_append(&format!("ns{i}"), "k", "v").await.unwrap() }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.unwrap());
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 16);
    assert!(seqs[0] > last);
    let after = store.log_append("schemas", "table-0", "after").await.unwrap();
    assert!(after > seqs[15]);
}

pub async fn log_read_filters_by_prefix_and_after_seq(store: Arc<dyn StorageBackend>) {
    let s1 = store.log_append("schemas", "public.orders", "o1").await.unwrap();
    let s2 = store.log_append("schemas", "public.items", "i1").await.unwrap();
    let s3 = store.log_append("other", "public.orders", "foreign").await.unwrap();
    let s4 = store.log_append("schemas", "public.orders", "o2").await.unwrap();
    let s5 = store.log_append("schemas", "sales.orders", "s1").await.unwrap();
    assert!(s1 < s2 && s2 < s3 && s3 < s4 && s4 < s5);

    let orders = store.log_read("schemas", "public.orders", 0).await.unwrap();
    let got: Vec<(u64, &str, &str)> = orders.iter().map(|e| (e.seq, e.key.as_str(), e.value.as_str())).collect();
    assert_eq!(got, [(s1, "public.orders", "o1"), (s4, "public.orders", "o2")]);

    let public: Vec<String> =
        store.log_read("schemas", "public.", 0).await.unwrap().into_iter().map(|e| e.value).collect();
    assert_eq!(public, ["o1", "i1", "o2"]);

    let after: Vec<u64> = store.log_read("schemas", "", s2).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(after, [s4, s5]);
    let after_s1: Vec<u64> = store.log_read("schemas", "public.", s1).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(after_s1, [s2, s4]);

    assert!(store.log_read("schemas", "", s5).await.unwrap().is_empty());
    assert!(store.log_read("schemas", "", u64::MAX).await.unwrap().is_empty());
    assert!(store.log_read("nothing-here", "", 0).await.unwrap().is_empty());
    let other = store.log_read("other", "", 0).await.unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].value, "foreign");
}

pub async fn slot_versions_and_conflicts(store: Arc<dyn StorageBackend>) {
    assert_eq!(store.slot_get("cursors", "s").await.unwrap(), None);
    // Expecting a version on an empty slot conflicts with "empty".
    assert_eq!(store.slot_cas("cursors", "s", Some(1), "x").await.unwrap(), CasOutcome::Conflict(None));

    assert_eq!(store.slot_cas("cursors", "s", None, "a").await.unwrap(), CasOutcome::Swapped(1));
    let v1 = Versioned { version: 1, value: "a".into() };
    assert_eq!(store.slot_get("cursors", "s").await.unwrap(), Some(v1.clone()));

    // expected None on an existing slot conflicts and reports what is there.
    assert_eq!(store.slot_cas("cursors", "s", None, "b").await.unwrap(), CasOutcome::Conflict(Some(v1.clone())));
    assert_eq!(store.slot_cas("cursors", "s", Some(7), "b").await.unwrap(), CasOutcome::Conflict(Some(v1)));

    assert_eq!(store.slot_cas("cursors", "s", Some(1), "b").await.unwrap(), CasOutcome::Swapped(2));
    assert_eq!(store.slot_cas("cursors", "s", Some(2), "c").await.unwrap(), CasOutcome::Swapped(3));
    assert_eq!(store.slot_get("cursors", "s").await.unwrap(), Some(Versioned { version: 3, value: "c".into() }));

    // Namespaces and keys are independent.
    assert_eq!(store.slot_get("leader", "s").await.unwrap(), None);
    assert_eq!(store.slot_cas("leader", "s", None, "me").await.unwrap(), CasOutcome::Swapped(1));
    assert_eq!(store.slot_get("cursors", "s").await.unwrap().unwrap().version, 3);

    assert!(store.slot_delete("cursors", "s").await.unwrap());
    assert!(!store.slot_delete("cursors", "s").await.unwrap());
    assert_eq!(store.slot_get("cursors", "s").await.unwrap(), None);
    assert_eq!(store.slot_cas("cursors", "s", None, "fresh").await.unwrap(), CasOutcome::Swapped(1));
}

pub async fn slot_cas_concurrent_writers_exactly_one_wins(store: Arc<dyn StorageBackend>) {
    const WRITERS: usize = 16;
    assert_eq!(store.slot_cas("leader", "pipeline", None, "initial").await.unwrap(), CasOutcome::Swapped(1));

    for round in 0..3u64 {
        let barrier = Arc::new(Barrier::new(WRITERS));
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let store = store.clone();
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                let seen = store.slot_get("leader", "pipeline").await.unwrap().unwrap();
                // Everyone has read the same version before anyone swaps.
                barrier.wait().await;
                let value = format!("round{round}-writer{writer}");
                let outcome = store.slot_cas("leader", "pipeline", Some(seen.version), &value).await.unwrap();
                (seen.version, value, outcome)
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        let expected_version = round + 1;
        assert!(results.iter().all(|(seen, _, _)| *seen == expected_version));

        let winners: Vec<&(u64, String, CasOutcome)> =
            results.iter().filter(|(_, _, outcome)| matches!(outcome, CasOutcome::Swapped(_))).collect();
        assert_eq!(winners.len(), 1, "exactly one writer must win: {results:?}");
        let (_, winning_value, winning_outcome) = winners[0];
        assert_eq!(*winning_outcome, CasOutcome::Swapped(expected_version + 1));
        let winner = Versioned { version: expected_version + 1, value: winning_value.clone() };

        for (_, _, outcome) in results.iter().filter(|(_, _, outcome)| matches!(outcome, CasOutcome::Conflict(_))) {
            assert_eq!(*outcome, CasOutcome::Conflict(Some(winner.clone())), "losers see the winner's value");
        }
        assert_eq!(store.slot_get("leader", "pipeline").await.unwrap(), Some(winner));
    }

    // Concurrent creation of an empty slot: exactly one creator.
    let barrier = Arc::new(Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.slot_cas("leader", "new", None, &format!("w{writer}")).await.unwrap()
        }));
    }
    let mut swapped = 0;
    for task in tasks {
        match task.await.unwrap() {
            CasOutcome::Swapped(version) => {
                assert_eq!(version, 1);
                swapped += 1;
            }
            CasOutcome::Conflict(current) => assert_eq!(current.unwrap().version, 1),
        }
    }
    assert_eq!(swapped, 1);
}

pub async fn queue_is_bounded(store: Arc<dyn StorageBackend>) {
    for i in 0..3 {
        store.queue_push("dlq", "pg-orders", &format!("e{i}"), 3).await.unwrap();
    }
    assert_eq!(store.queue_len("dlq", "pg-orders").await.unwrap(), 3);

    match store.queue_push("dlq", "pg-orders", "overflow", 3).await {
        Err(StorageError::QueueFull { namespace, key, capacity }) => {
            assert_eq!((namespace.as_str(), key.as_str(), capacity), ("dlq", "pg-orders", 3));
        }
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert_eq!(store.queue_len("dlq", "pg-orders").await.unwrap(), 3);

    // Other queues are unaffected; capacity 0 refuses everything.
    store.queue_push("dlq", "other", "x", 3).await.unwrap();
    assert!(matches!(store.queue_push("dlq", "zero", "x", 0).await, Err(StorageError::QueueFull { .. })));
    assert_eq!(store.queue_len("dlq", "zero").await.unwrap(), 0);

    // Acking frees room.
    let first = store.queue_peek("dlq", "pg-orders", 1).await.unwrap().remove(0);
    assert!(store.queue_ack("dlq", "pg-orders", first.id).await.unwrap());
    let id = store.queue_push("dlq", "pg-orders", "e3", 3).await.unwrap();
    assert!(id > first.id);
    assert_eq!(store.queue_len("dlq", "pg-orders").await.unwrap(), 3);

    // Concurrent pushes never exceed the capacity.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.queue_push("dlq", "race", &format!("r{i}"), 5).await }));
    }
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(StorageError::QueueFull { .. }) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(accepted, 5);
    assert_eq!(store.queue_len("dlq", "race").await.unwrap(), 5);
}

pub async fn queue_is_ordered_with_explicit_ack(store: Arc<dyn StorageBackend>) {
    assert!(store.queue_peek("dlq", "q", 10).await.unwrap().is_empty());
    assert_eq!(store.queue_len("dlq", "q").await.unwrap(), 0);

    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(store.queue_push("dlq", "q", &format!("item{i}"), 100).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase in push order: {ids:?}");
    store.queue_push("dlq", "other", "elsewhere", 100).await.unwrap();
    store.queue_push("other-ns", "q", "elsewhere", 100).await.unwrap();

    let peeked = store.queue_peek("dlq", "q", 3).await.unwrap();
    let values: Vec<&str> = peeked.iter().map(|item| item.value.as_str()).collect();
    assert_eq!(values, ["item0", "item1", "item2"]);
    assert_eq!(peeked.iter().map(|item| item.id).collect::<Vec<_>>(), ids[..3]);
    // Peeking does not consume.
    assert_eq!(store.queue_peek("dlq", "q", 3).await.unwrap(), peeked);
    assert!(store.queue_peek("dlq", "q", 0).await.unwrap().is_empty());
    assert_eq!(store.queue_peek("dlq", "q", 100).await.unwrap().len(), 5);

    // Ack out of order removes exactly that item.
    assert!(store.queue_ack("dlq", "q", ids[1]).await.unwrap());
    assert!(!store.queue_ack("dlq", "q", ids[1]).await.unwrap(), "second ack finds nothing");
    assert!(!store.queue_ack("dlq", "q", 999_999).await.unwrap(), "unknown id");
    assert!(!store.queue_ack("dlq", "q", u64::MAX).await.unwrap(), "unknown id");
    assert!(!store.queue_ack("dlq", "never-pushed", ids[0]).await.unwrap(), "ack is scoped to its queue");
    assert!(!store.queue_ack("other-ns", "never-pushed", ids[0]).await.unwrap(), "ack is scoped to its queue");
    assert_eq!(store.queue_len("dlq", "q").await.unwrap(), 4);
    let values: Vec<String> = store.queue_peek("dlq", "q", 10).await.unwrap().into_iter().map(|i| i.value).collect();
    assert_eq!(values, ["item0", "item2", "item3", "item4"]);

    assert!(store.queue_ack("dlq", "q", ids[0]).await.unwrap());
    let head = store.queue_peek("dlq", "q", 1).await.unwrap();
    assert_eq!(head[0].value, "item2");
    assert_eq!(head[0].id, ids[2]);

    assert_eq!(store.queue_len("dlq", "other").await.unwrap(), 1);
    assert_eq!(store.queue_len("other-ns", "q").await.unwrap(), 1);
}

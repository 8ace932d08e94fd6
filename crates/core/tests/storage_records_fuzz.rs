//! Property tests (fuzzing) of the core's readers of records kept in
//! storage: checkpoints, schema history, snapshot progress and dead
//! letters. Each record is written by its real writer, then replaced by
//! arbitrary or mutated text (as a damaged file or a hand edit would leave
//! it) and read back through the public reader: no panic; a checkpoint or
//! snapshot record that does not parse is an error naming its key; an
//! unreadable schema version or dead letter is skipped, the others still
//! read. [`deltaforge_testkit::fuzz::CASES`] cases per property.

use std::sync::{Arc, OnceLock};

use chrono::Utc;
use deltaforge_core::snapshot::progress::{ReadKind, TableProgress};
use deltaforge_core::snapshot::store::SnapshotStore;
use deltaforge_core::testing::Seq;
use deltaforge_core::*;
use deltaforge_storage::{MemoryBackend, StorageBackend};
use deltaforge_testkit::fuzz::{self, mutated_text};
use proptest::prelude::*;

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap())
}

/// Valid records as the writers store them: (checkpoint, schema version,
/// snapshot progress, dead letter).
fn seeds() -> &'static (String, String, String, String) {
    static SEEDS: OnceLock<(String, String, String, String)> = OnceLock::new();
    SEEDS.get_or_init(|| {
        rt().block_on(async {
            let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
            let cp =
                Checkpoint { position: Seq::at(7), sinks: [("out".into(), Seq::at(9))].into(), written_at: Utc::now() };
            CheckpointStore::new(storage.clone()).save("src", &cp).await.unwrap();
            let schemas = deltaforge_core::schema::SchemaRegistry::load(storage.clone(), "t").await.unwrap();
            let cols = serde_json::json!({"columns": [{"name": "id", "type": "int4", "key": true}]});
            schemas.register("db", "orders", cols, Some(Seq::at(3)), Some(Seq::at(2))).await.unwrap();
            let snap = SnapshotStore::new(storage.clone(), "p");
            let mut progress = TableProgress::start(ReadKind::Backfill, Some("id > 'a''b'".into()), Some(10));
            progress.last_key = Some(vec!["42".into(), "x,y".into()]);
            snap.save("db.orders", &progress).await.unwrap();
            let letter = DeadLetter {
                event: serde_json::json!({"op": "c", "after": {"id": 1}}),
                error: "rejected".into(),
                sink: Some("out".into()),
                processor: None,
                position: Seq::at(5),
                time: Utc::now(),
            };
            storage.queue_push("dlq", "p", &serde_json::to_string(&letter).unwrap(), 10).await.unwrap();
            (
                storage.kv_get("checkpoints", "src").await.unwrap().unwrap(),
                storage.log_read("schemas", "t/", 0).await.unwrap().remove(0).value,
                storage.slot_get("snapshots", "p/db.orders").await.unwrap().unwrap().value,
                storage.queue_peek("dlq", "p", 1).await.unwrap().remove(0).value,
            )
        })
    })
}

fn record(seed: fn(&(String, String, String, String)) -> &String) -> impl Strategy<Value = String> {
    prop_oneof![1 => any::<String>(), 3 => mutated_text(vec![seed(seeds()).clone()])]
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn checkpoint_records_never_panic(text in record(|s| &s.0)) {
        rt().block_on(async {
            let storage = Arc::new(MemoryBackend::new());
            storage.kv_put("checkpoints", "src", &text, None).await.unwrap();
            match CheckpointStore::new(storage).load("src").await {
                Ok(cp) => assert!(cp.is_some()),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.contains("\"src\"") && msg.contains("checkpoints reset"), "{msg}");
                }
            }
        });
    }

    #[test]
    fn schema_history_records_never_panic(text in record(|s| &s.1)) {
        rt().block_on(async {
            let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
            storage.log_append("schemas", "t/db/orders", &text).await.unwrap();
            storage.log_append("schemas", "t/db/orders", &seeds().1).await.unwrap();
            // The damaged record is skipped; the good one still reads.
            let schemas = deltaforge_core::schema::SchemaRegistry::load(storage, "t").await.unwrap();
            assert!(schemas.version_at("db", "orders", &Seq::at(100)).is_some());
        });
    }

    #[test]
    fn snapshot_progress_records_never_panic(text in record(|s| &s.2)) {
        rt().block_on(async {
            let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
            storage.slot_cas("snapshots", "p/db.orders", None, &text).await.unwrap();
            if let Err(e) = SnapshotStore::new(storage, "p").load("db.orders").await {
                assert!(e.to_string().contains("p/db.orders"), "{e}");
            }
        });
    }

    #[test]
    fn dead_letters_never_panic(text in record(|s| &s.3)) {
        rt().block_on(async {
            let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
            storage.queue_push("dlq", "p", &text, 10).await.unwrap();
            storage.queue_push("dlq", "p", &seeds().3, 10).await.unwrap();
            let dlq = DeadLetterQueue::new(storage, "p", DlqConfig::default());
            // The damaged letter is left out of the list; the good one is in it.
            let listed = dlq.list(10).await.unwrap();
            assert!(listed.iter().any(|(id, _)| *id == 2));
        });
    }
}

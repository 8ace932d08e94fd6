//! The source run in-process against the real MariaDB (no binary, no sinks):
//! events and commits as the source emits them, for fast checks of
//! decoding and of the transaction boundaries.

use std::sync::Arc;
use std::time::Duration;

use deltaforge_core::{Position, SchemaRegistry, Source, SourceChunk, SourceContext};
use deltaforge_source_mysql::{BinlogPosition, MysqlConfig, MysqlSource};
use deltaforge_testkit::{mariadb_sql, service};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_at_their_end() {
    let url = service("mariadb");
    let db = format!("dft_live_{}", std::process::id());
    mariadb_sql(&url, &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(10))"));
    let cfg: MysqlConfig = serde_json::from_value(
        json!({"id": format!("live-{db}"), "dsn": url, "tables": [format!("{db}.t")], "heartbeat_secs": 1, "snapshot": {"mode": "never"}}),
    )
    .unwrap();
    let storage = Arc::new(deltaforge_storage::MemoryBackend::new());
    let schemas = SchemaRegistry::load(storage.clone(), "test").await.unwrap();
    let (tx, mut rx) = mpsc::channel::<SourceChunk>(16);
    let (_dtx, drx) = watch::channel::<Option<Position>>(None);
    let shutdown = CancellationToken::new();
    let ctx = SourceContext {
        pipeline: "live".into(),
        tenant: "test".into(),
        resume_from: None,
        sender: deltaforge_core::ChunkSender::new(tx, 64),
        durable: drx,
        shutdown: shutdown.clone(),
        schemas: schemas.clone(),
        snapshots: deltaforge_core::SnapshotStore::new(storage.clone(), "live"),
    };
    let source = Box::new(MysqlSource::new(cfg).unwrap());
    let task = tokio::spawn(source.run(ctx));
    // The start position is committed first.
    let first = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.unwrap().unwrap();
    assert!(first.events.is_empty());
    assert_eq!(first.commits.len(), 1);
    mariadb_sql(&url, &format!("USE {db}; BEGIN; INSERT INTO t VALUES (1,'a'),(2,'b'); UPDATE t SET v='c' WHERE id=1; COMMIT; DELETE FROM t WHERE id=2;"));
    let mut events = Vec::new();
    let mut commits = Vec::new();
    while events.len() < 4 || commits.len() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("more events").unwrap();
        for c in chunk.commits {
            commits.push((events.len() + c.after, c.position));
        }
        events.extend(chunk.events);
    }
    // Idle for longer than the silence limit (3 heartbeat periods + 2 s):
    // heartbeats keep the stream alive, so the source is still running.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(!task.is_finished(), "the source stopped while idle: {:?}", task.await);
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(commits[0].0, 3, "first commit after the 3-row transaction");
    assert_eq!(commits[1].0, 4);
    assert_eq!(events[0].after.as_ref().unwrap().to_json(), json!({"id": 1, "v": "a"}));
    assert_eq!(events[2].before.as_ref().unwrap().to_json(), json!({"id": 1, "v": "a"}));
    assert_eq!(events[2].after.as_ref().unwrap().to_json(), json!({"id": 1, "v": "c"}));
    assert_eq!(events[3].before.as_ref().unwrap().to_json(), json!({"id": 2, "v": "b"}));
    assert_eq!((events[0].index, events[1].index, events[2].index, events[3].index), (0, 1, 2, 0));
    assert_eq!(events[0].tx_position, events[2].tx_position);
    assert_ne!(events[0].tx_position, events[3].tx_position);
    assert_eq!(events[0].key_columns.as_ref().unwrap().len(), 1);
    let BinlogPosition { pos: p1, gtid_set: g1, .. } = BinlogPosition::of(&commits[0].1).expect("a binlog position");
    let BinlogPosition { pos: p2, gtid_set: g2, file } = BinlogPosition::of(&commits[1].1).expect("a binlog position");
    let status = mariadb_sql(&url, "SHOW MASTER STATUS");
    let mut fields = status.split('\t');
    assert_eq!(&**file, fields.next().unwrap(), "binlog file name of the checkpoint");
    assert_eq!(*p2, fields.next().unwrap().trim().parse::<u64>().unwrap());
    assert!(p1 < p2);
    assert_ne!(g1, g2);
    assert_eq!(g2.as_deref().unwrap(), mariadb_sql(&url, "SELECT @@gtid_binlog_pos").trim());
    assert_eq!(schemas.versions(&db, "t").len(), 1);
    mariadb_sql(&url, &format!("DROP DATABASE {db}"));
}

//! Writing a chunk's watermarks into the WAL
//! (`pg_logical_emit_message`), where the stream finds them.
//!
//! This module owns how watermarks are written and flushed; it must never
//! wait for the stream, and never write a high watermark in a transaction
//! that stays open.

use deltaforge_core::snapshot::{Watermark, WatermarkKind};
use deltaforge_core::SourceError;
use tokio_postgres::Client;

use super::layout::{layout, layout_sql, TableInfo};
use super::link::WATERMARK_PREFIX;
use super::sql::{literal, statements};

/// Writes watermarks in order. A low watermark alone is written as it
/// is (the high one after it flushes both). Otherwise in a transaction
/// that takes an xid (`txid_current()`) so that its commit flushes the
/// WAL and the messages reach the stream at once (PostgreSQL before 17
/// has no `flush` argument), followed, with `then_layout`, by the slot
/// check and that table's layout for the next chunk: one round trip.
pub(super) async fn emit_watermarks(
    client: &Client,
    slot: &str,
    marks: &[Watermark],
    then_layout: Option<&str>,
) -> Result<Option<Option<TableInfo>>, SourceError> {
    let emits = marks
        .iter()
        .map(|wm| {
            let content = serde_json::to_string(wm).expect("watermarks serialize");
            format!(
                "SELECT pg_catalog.pg_logical_emit_message(false, {}, {});",
                literal(WATERMARK_PREFIX),
                literal(&content)
            )
        })
        .collect::<String>();
    let flush = marks.iter().any(|m| m.kind == WatermarkKind::High);
    let mut sql = if flush { format!("BEGIN; {emits} SELECT pg_catalog.txid_current(); COMMIT;") } else { emits };
    if let Some(table) = then_layout {
        sql.push(' ');
        sql.push_str(&layout_sql(slot, table));
    }
    let results = statements(client, &sql, "writing a watermark").await?;
    then_layout.map(|table| layout(slot, table, results)).transpose()
}

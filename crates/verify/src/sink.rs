//! [`SinkReader`]: a sink's current state per key, and what its deliveries
//! looked like (duplicates, order).
//!
//! This module defines the contract only; readers never write to the sink.

use std::collections::HashMap;

use async_trait::async_trait;
use deltaforge_core::Position;
use serde_json::Value;

use crate::error::VerifyError;
use crate::model::{SinkRow, TableLayout};
use crate::report::Deliveries;
use crate::sql::SqlReader;

/// Reads what a sink holds.
#[async_trait]
pub trait SinkReader: Send {
    /// Reads (or reads again) the sink's contents for these tables. Keys
    /// not asked for by [`SinkReader::rows`] since are what
    /// [`SinkReader::unvisited`] returns.
    async fn load(&mut self, tables: &[TableLayout]) -> Result<(), VerifyError>;

    /// The current rows of `keys` of `table` (a key absent from the map is
    /// not in the sink); marks them visited.
    async fn rows(&mut self, table: &str, keys: &[String]) -> Result<HashMap<String, SinkRow>, VerifyError>;

    /// Up to `limit` rows of `table` in the sink never asked for since
    /// [`SinkReader::load`] (rows the source does not have), in key order,
    /// marked visited; and how many there are in all.
    async fn unvisited(&mut self, table: &str, limit: usize) -> Result<(Vec<(String, SinkRow)>, u64), VerifyError>;

    /// The rows of `keys` of `table` as the sink held them once every
    /// change at or before source position `at` was applied and none after
    /// (reads the sink again).
    async fn rows_as_of(
        &mut self,
        table: &TableLayout,
        keys: &[String],
        at: &Position,
    ) -> Result<HashMap<String, SinkRow>, VerifyError>;

    /// Duplicate and out-of-order deliveries seen by the last load.
    fn deliveries(&self) -> Deliveries;

    /// Whether a source value and this sink's value hold the same data
    /// (a table sink's types differ from the source's).
    fn same(&self, source: &Value, sink: &Value) -> bool {
        source == sink
    }

    /// The key columns the sink matches rows of source table `table` by,
    /// when not the source's key.
    fn key_override(&self, _table: &str) -> Option<Vec<String>> {
        None
    }

    /// A read-only SQL connection to where `table`'s rows are, and the
    /// table's name there (`schema.table`): only database sinks have one
    /// (chunk hashes need it). Valid after [`SinkReader::load`].
    fn table_sql(&mut self, _table: &str) -> Option<(&mut dyn SqlReader, String)> {
        None
    }

    /// The rows of `table` matching `condition` (SQL of the sink's
    /// dialect), with their key texts; only for sinks with
    /// [`SinkReader::table_sql`].
    async fn rows_in(&mut self, table: &str, _condition: &str) -> Result<Vec<(String, SinkRow)>, VerifyError> {
        Err(VerifyError::Unsupported(format!("rows of {table} cannot be read by condition from this sink")))
    }
}

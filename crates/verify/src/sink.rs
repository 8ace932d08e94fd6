//! [`SinkReader`]: a sink's current state per key, and what its deliveries
//! looked like (duplicates, order).
//!
//! This module defines the contract only; readers never write to the sink.

use std::collections::HashMap;

use async_trait::async_trait;
use deltaforge_core::Position;

use crate::error::VerifyError;
use crate::model::{SinkRow, TableLayout};
use crate::report::Deliveries;

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
}

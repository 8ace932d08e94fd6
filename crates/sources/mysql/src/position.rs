//! Funnels every construction and destructuring of the MySQL variant of
//! [`Position`] through two functions, so that the source owns one place
//! that knows how a binlog position is represented in core.
//!
//! It must never hold logic about positions (ordering, GTID arithmetic):
//! only the conversion to and from the shared type.

use std::sync::Arc;

use deltaforge_core::Position;

/// A binlog position taken apart: the file, the byte offset in it, and the
/// GTID set executed up to there (when GTIDs are on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BinlogPosition {
    /// Binlog file name, e.g. `mariadb-bin.000042`.
    pub file: Arc<str>,
    /// Byte offset inside the file.
    pub pos: u64,
    /// MySQL `uuid:1-42` or MariaDB `0-1-42` form.
    pub gtid_set: Option<Arc<str>>,
}

/// The [`Position`] of `file:pos` with the GTID set executed up to there.
pub(crate) fn position(file: Arc<str>, pos: u64, gtid_set: Option<Arc<str>>) -> Position {
    Position::Mysql { file, pos, gtid_set }
}

/// The parts of a binlog position; `None` for another source's position.
pub(crate) fn parts(position: &Position) -> Option<BinlogPosition> {
    match position {
        Position::Mysql { file, pos, gtid_set } => {
            Some(BinlogPosition { file: file.clone(), pos: *pos, gtid_set: gtid_set.clone() })
        }
        _ => None,
    }
}

//! Table patterns: the one `db.table` wildcard pattern of DeltaForge,
//! defined in `deltaforge-common` so that processors and sources agree on
//! what a pattern matches. Re-exported here for the processors' configs.

pub use deltaforge_common::table_pattern::TablePattern;

//! `kill -9` under load, per source and for the table sink: nothing committed is lost, and
//! duplicates appear only after the checkpoint.

mod datagen;
mod mysql;
mod pg;
mod table_sink;
mod table_sink_cross;

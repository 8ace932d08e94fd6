//! `kill -9` under load, per source: nothing committed is lost, and
//! duplicates appear only after the checkpoint.

mod datagen;
mod mysql;
mod pg;

//! Operating the engine: online backups of the SQLite storage, restores
//! and the `POST /storage/backup` route; the command-line client of the
//! REST API, completions, the man page, the version, and the shipped
//! examples; the JSON Schema of a spec; alerts and the dashboard against
//! a real Prometheus.

mod backup;
mod cli;
mod examples;
mod prometheus;
mod schema;

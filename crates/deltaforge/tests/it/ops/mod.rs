//! Operations on a running or stopped engine: online backups of the SQLite
//! storage, restores, and the `POST /storage/backup` route.

mod backup;

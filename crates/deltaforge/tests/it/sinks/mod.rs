//! The network sinks (Kafka, Redis, NATS, HTTP), object storage (S3,
//! local Parquet) and the table sinks (PostgreSQL, MariaDB) against real
//! servers, fed by `datagen`, PostgreSQL and MariaDB.

mod from_postgres;
mod http;
mod kafka;
mod mysql;
mod mysql_to_postgres;
mod nats;
mod object_store;
mod object_store_refused;
mod postgres;
mod redis;

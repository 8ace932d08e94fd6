//! The network sinks (Kafka, Redis, NATS, HTTP) against real servers, fed
//! by `datagen` and by PostgreSQL.

mod from_postgres;
mod http;
mod kafka;
mod nats;
mod redis;

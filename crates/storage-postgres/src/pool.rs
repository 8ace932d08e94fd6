//! A tiny connection pool: idle clients are reused, closed ones dropped, at
//! most a fixed number open at once.
//!
//! This module owns connecting (`NoTls`) and lending clients; a broken
//! connection is simply dropped and replaced. It must never run SQL and
//! never log the DSN (only the redacted `location`).

use std::sync::{Arc, Mutex, PoisonError};

use deltaforge_storage::{Result, StorageError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, NoTls};

/// A tiny connection pool: idle clients are reused, closed ones dropped,
/// at most `max_connections` open at once.
pub(crate) struct Pool {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) idle: Arc<Mutex<Vec<Client>>>,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) location: String,
}

/// A client borrowed from the [`Pool`]; returned to it on drop.
pub(crate) struct PooledClient {
    client: Option<Client>,
    idle: Arc<Mutex<Vec<Client>>>,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for PooledClient {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("client present until drop")
    }
}

impl std::ops::DerefMut for PooledClient {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("client present until drop")
    }
}

impl Drop for PooledClient {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if !client.is_closed() {
                self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(client);
            }
        }
    }
}

impl Pool {
    pub(crate) async fn get(&self, op: &str) -> Result<PooledClient> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| StorageError::backend(format!("{op}: connection pool closed"), e))?;
        loop {
            let reused = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
            match reused {
                Some(c) if c.is_closed() => continue,
                Some(c) => return Ok(PooledClient { client: Some(c), idle: self.idle.clone(), _permit: permit }),
                None => break,
            }
        }
        let client = self.connect().await.map_err(|e| StorageError::Backend {
            op: format!(
                "{op}: connecting to {} (is the PostgreSQL storage server running and reachable?)",
                self.location
            ),
            source: Box::new(e),
        })?;
        Ok(PooledClient { client: Some(client), idle: self.idle.clone(), _permit: permit })
    }

    pub(crate) async fn connect(&self) -> std::result::Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(NoTls).await?;
        let location = self.location.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(storage = %location, "PostgreSQL storage connection closed: {e}");
            }
        });
        Ok(client)
    }
}

//! The relations the stream has described (pgoutput Relation and Type
//! messages), their schema history versions, and the conversion of their
//! tuples to rows.
//!
//! This module owns what the source knows about each relation id: its
//! columns, key, whether `tables` matches it, and the schema version its
//! events carry. It must never emit events or decide positions: the caller
//! passes the position a schema becomes active at.

use std::collections::HashMap;
use std::sync::Arc;

use deltaforge_core::schema::fingerprint;
use deltaforge_core::{Columns, Row, SourceContext, SourceError};
use serde_json::{json, Value};

use crate::config::TablePattern;
use crate::pgoutput::{RelationColumn, TupleValue};
use crate::position::position;
use crate::values;

/// What the source knows about one relation (from its Relation message).
pub(crate) struct Relation {
    /// Schema name.
    pub schema: Arc<str>,
    /// Table name.
    pub table: Arc<str>,
    /// Column names, in the relation's order.
    pub columns: Columns,
    /// Type OID of each column.
    pub type_oids: Vec<u32>,
    /// Positions of the key columns (REPLICA IDENTITY) in `columns`.
    pub key_idx: Vec<usize>,
    /// Names of the key columns.
    pub key_columns: Columns,
    /// The registered schema version, once the first change used it.
    pub version: Option<u64>,
    /// Schema description not yet registered: it is registered at the
    /// first change that uses it, whose LSN is where it became active (the
    /// Relation message itself carries no WAL position).
    pending_schema: Option<Value>,
    /// True when `tables` matches the relation.
    pub wanted: bool,
}

impl Relation {
    /// One value of a tuple; an unchanged TOAST value takes the old row's
    /// value when there is one (REPLICA IDENTITY FULL), else the marker.
    fn value(&self, i: usize, v: TupleValue, fallback: Option<&[Value]>) -> Value {
        match v {
            TupleValue::Null => Value::Null,
            TupleValue::UnchangedToast => match fallback.and_then(|f| f.get(i)) {
                Some(old) if !is_toast_marker(old) => old.clone(),
                _ => values::unchanged_toast(),
            },
            TupleValue::Text(b) => values::to_json(self.type_oids[i], &String::from_utf8_lossy(&b)),
            TupleValue::Binary(b) => {
                use base64::Engine as _;
                Value::String(base64::engine::general_purpose::STANDARD.encode(&b))
            }
        }
    }

    /// A whole row image; `fallback` is the old row, for unchanged TOAST
    /// values.
    pub fn row(&self, tuple: Vec<TupleValue>, fallback: Option<&[Value]>) -> Result<Row, SourceError> {
        if tuple.len() != self.columns.len() {
            return Err(SourceError::Fatal(format!(
                "protocol error: a row of {}.{} has {} values but its relation has {} columns",
                self.schema,
                self.table,
                tuple.len(),
                self.columns.len()
            )));
        }
        let values = tuple.into_iter().enumerate().map(|(i, v)| self.value(i, v, fallback)).collect();
        Ok(Row::new(self.columns.clone(), values))
    }

    /// The key columns only of a key tuple (REPLICA IDENTITY DEFAULT/INDEX).
    pub fn key_row(&self, tuple: Vec<TupleValue>) -> Result<Row, SourceError> {
        let full = self.row(tuple, None)?;
        let values = self.key_idx.iter().map(|i| full.values()[*i].clone()).collect();
        Ok(Row::new(self.key_columns.clone(), values))
    }
}

fn is_toast_marker(v: &Value) -> bool {
    v.as_object().is_some_and(|o| o.contains_key(values::UNCHANGED_TOAST_KEY))
}

/// The relations of one streaming session, by relation id.
pub(crate) struct Relations {
    source_id: Arc<str>,
    patterns: Vec<TablePattern>,
    by_id: HashMap<u32, Relation>,
    /// Names of non-builtin types, from Type messages.
    types: HashMap<u32, String>,
}

impl Relations {
    /// No relation known yet; `patterns` decide which are wanted.
    pub fn new(source_id: Arc<str>, patterns: Vec<TablePattern>) -> Self {
        Relations { source_id, patterns, by_id: HashMap::new(), types: HashMap::new() }
    }

    /// A Type message: names a type for the schema descriptions after it.
    pub fn on_type(&mut self, id: u32, namespace: String, name: String) {
        self.types.insert(id, format!("{namespace}.{name}"));
    }

    /// A Relation message: (re)describes relation `id`; its schema is
    /// registered at its first change.
    pub fn on_relation(
        &mut self,
        id: u32,
        namespace: String,
        name: String,
        replica_identity: u8,
        columns: Vec<RelationColumn>,
    ) {
        let wanted = TablePattern::any(&self.patterns, &namespace, &name);
        let names: Columns = columns.iter().map(|c| Arc::<str>::from(c.name.as_str())).collect::<Vec<_>>().into();
        let key_idx: Vec<usize> = columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect();
        let key_columns: Columns = key_idx.iter().map(|i| names[*i].clone()).collect::<Vec<_>>().into();
        let mut pending_schema = None;
        if wanted {
            pending_schema = Some(json!({
                "columns": columns.iter().map(|c| json!({
                    "name": c.name,
                    "type_oid": c.type_oid,
                    "type_name": values::builtin_type_name(c.type_oid)
                        .map(str::to_string)
                        .or_else(|| self.types.get(&c.type_oid).cloned()),
                    "type_modifier": c.type_modifier,
                    "key": c.key,
                })).collect::<Vec<_>>(),
                "replica_identity": match replica_identity {
                    b'd' => "default",
                    b'f' => "full",
                    b'i' => "index",
                    b'n' => "nothing",
                    _ => "unknown",
                },
            }));
        } else {
            tracing::debug!(source = %self.source_id, schema = namespace, table = name, "relation not matched by `tables`: its changes are ignored");
        }
        self.by_id.insert(
            id,
            Relation {
                schema: namespace.into(),
                table: name.into(),
                columns: names,
                type_oids: columns.iter().map(|c| c.type_oid).collect(),
                key_idx,
                key_columns,
                version: None,
                pending_schema,
                wanted,
            },
        );
    }

    /// The relation with this id, if described.
    pub fn get(&self, id: u32) -> Option<&Relation> {
        self.by_id.get(&id)
    }

    /// The relation of a row message, or `None` when its changes are not
    /// wanted; an error when it was never described.
    pub fn wanted(&self, id: u32) -> Result<Option<&Relation>, SourceError> {
        let rel = self.by_id.get(&id).ok_or_else(|| {
            SourceError::Retryable(format!("protocol error: change for relation {id} before its Relation message"))
        })?;
        Ok(rel.wanted.then_some(rel))
    }

    /// The id of the wanted relation `schema.table`, if the stream has
    /// described it.
    pub fn find_wanted(&self, schema: &str, table: &str) -> Option<u32> {
        self.by_id.iter().find(|(_, r)| r.wanted && *r.schema == *schema && *r.table == *table).map(|(id, _)| *id)
    }

    /// Registers a relation's pending schema at the position of its first
    /// change (`lsn`, `tx_id`), reusing the version already recorded for
    /// that position, so that replays do not append duplicates.
    pub async fn ensure_version(
        &mut self,
        id: u32,
        lsn: u64,
        tx_id: Option<u64>,
        ctx: &SourceContext,
    ) -> Result<(), SourceError> {
        let Some(rel) = self.by_id.get_mut(&id) else { return Ok(()) };
        let Some(schema) = rel.pending_schema.take() else { return Ok(()) };
        let position = position(lsn, tx_id);
        let fp = fingerprint(&schema);
        rel.version = match ctx.schemas.version_at(&rel.schema, &rel.table, &position) {
            Some(v) if v.fingerprint == fp => Some(v.version),
            _ => {
                let durable = ctx.durable.borrow().clone();
                Some(ctx.schemas.register(&rel.schema, &rel.table, schema, Some(position), durable).await.map_err(
                    |e| SourceError::Retryable(format!("registering the schema of {}.{}: {e}", rel.schema, rel.table)),
                )?)
            }
        };
        Ok(())
    }
}

//! Decoding of `pgoutput` logical replication messages (protocol version 1):
//! Begin, Commit, Origin, Relation, Type, Insert, Update, Delete, Truncate
//! and logical decoding Message.
//!
//! Hand-written because the format is small and fixed (PostgreSQL
//! documentation, "Logical Replication Message Formats"), because the
//! transport crate hands back raw bytes for row messages, and so that
//! decoding is unit-testable from captured bytes without a server. This
//! module is pure: it must never do I/O, and it must never panic on
//! malformed input (every read is bounds-checked and returns
//! [`DecodeError`]).

use bytes::Bytes;

/// A malformed or unsupported pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pgoutput message {tag:?}: {reason}")]
pub struct DecodeError {
    /// The message tag.
    pub tag: char,
    /// What was wrong.
    pub reason: String,
}

/// One column of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity key.
    pub key: bool,
    /// Column name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Type modifier (`-1` when none).
    pub type_modifier: i32,
}

/// A column value in a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    /// SQL NULL.
    Null,
    /// An unchanged TOAST value that was not sent.
    UnchangedToast,
    /// Text-format value.
    Text(Bytes),
    /// Binary-format value (only with the `binary` option, unused here).
    Binary(Bytes),
}

/// A decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Start of a transaction.
    Begin {
        /// LSN of the commit record.
        final_lsn: u64,
        /// Commit time, microseconds since 2000-01-01.
        commit_time: i64,
        /// Transaction id.
        xid: u32,
    },
    /// End of a transaction.
    Commit {
        /// LSN of the commit record.
        commit_lsn: u64,
        /// End LSN of the commit record.
        end_lsn: u64,
        /// Commit time, microseconds since 2000-01-01.
        commit_time: i64,
    },
    /// Origin of a transaction replicated from elsewhere.
    Origin {
        /// Commit LSN on the origin server.
        lsn: u64,
        /// Origin name.
        name: String,
    },
    /// Describes a table before its first change in a session, and again
    /// after its definition changes.
    Relation {
        /// Relation OID.
        id: u32,
        /// Schema.
        namespace: String,
        /// Table.
        name: String,
        /// REPLICA IDENTITY setting (`d`efault, `n`othing, `f`ull, `i`ndex).
        replica_identity: u8,
        /// Columns in table order.
        columns: Vec<RelationColumn>,
    },
    /// Describes a non-built-in type used by a relation.
    Type {
        /// Type OID.
        id: u32,
        /// Schema.
        namespace: String,
        /// Type name.
        name: String,
    },
    /// A row inserted.
    Insert {
        /// Relation OID.
        relation: u32,
        /// The new row.
        new: Vec<TupleValue>,
    },
    /// A row updated.
    Update {
        /// Relation OID.
        relation: u32,
        /// Old key (`K`, replica identity DEFAULT/INDEX, when the key changed)
        /// or old full row (`O`, replica identity FULL).
        old: Option<(u8, Vec<TupleValue>)>,
        /// The new row.
        new: Vec<TupleValue>,
    },
    /// A row deleted.
    Delete {
        /// Relation OID.
        relation: u32,
        /// `K` (key columns) or `O` (full row).
        kind: u8,
        /// The old key or row.
        old: Vec<TupleValue>,
    },
    /// Tables truncated.
    Truncate {
        /// Option bits: 1 = CASCADE, 2 = RESTART IDENTITY.
        options: u8,
        /// Relation OIDs.
        relations: Vec<u32>,
    },
    /// A logical decoding message (`pg_logical_emit_message`).
    LogicalMessage {
        /// Emitted inside a transaction.
        transactional: bool,
        /// LSN of the message.
        lsn: u64,
        /// Prefix.
        prefix: String,
        /// Content.
        content: Bytes,
    },
}

struct Reader<'a> {
    tag: char,
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: impl Into<String>) -> DecodeError {
        DecodeError { tag: self.tag, reason: reason.into() }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or_else(|| self.err(format!("truncated at byte {} (wanted {n} more)", self.pos)))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn cstr(&mut self) -> Result<String, DecodeError> {
        let rest = &self.buf[self.pos..];
        let n = rest.iter().position(|b| *b == 0).ok_or_else(|| self.err("unterminated string"))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.take(n)?;
        Ok(self.buf.slice(start..start + n))
    }

    /// Bytes left after the read position: a bound for any count a
    /// message announces, so that a damaged count never sizes an allocation.
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn tuple(&mut self) -> Result<Vec<TupleValue>, DecodeError> {
        let n = self.i16()?;
        let n = usize::try_from(n).map_err(|_| self.err("negative column count"))?;
        // Every value takes at least its one kind byte.
        let mut out = Vec::with_capacity(n.min(self.remaining()));
        for _ in 0..n {
            out.push(match self.u8()? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::UnchangedToast,
                kind @ (b't' | b'b') => {
                    let len = self.i32()?;
                    let len = usize::try_from(len).map_err(|_| self.err("negative value length"))?;
                    let v = self.bytes(len)?;
                    if kind == b't' {
                        TupleValue::Text(v)
                    } else {
                        TupleValue::Binary(v)
                    }
                }
                other => return Err(self.err(format!("unknown tuple value kind {:?}", other as char))),
            });
        }
        Ok(out)
    }
}

/// Decodes one pgoutput message (the payload of an XLogData message).
pub fn decode(buf: &Bytes) -> Result<Message, DecodeError> {
    let Some(&tag) = buf.first() else {
        return Err(DecodeError { tag: '?', reason: "empty message".into() });
    };
    let mut r = Reader { tag: tag as char, buf, pos: 1 };
    let msg = match tag {
        b'B' => Message::Begin { final_lsn: r.u64()?, commit_time: r.i64()?, xid: r.u32()? },
        b'C' => {
            let _flags = r.u8()?;
            Message::Commit { commit_lsn: r.u64()?, end_lsn: r.u64()?, commit_time: r.i64()? }
        }
        b'O' => Message::Origin { lsn: r.u64()?, name: r.cstr()? },
        b'R' => {
            let id = r.u32()?;
            let namespace = r.cstr()?;
            let name = r.cstr()?;
            let replica_identity = r.u8()?;
            let n = r.i16()?;
            let n = usize::try_from(n).map_err(|_| r.err("negative column count"))?;
            // Every column takes at least 10 bytes (flags, NUL, OID, typmod).
            let mut columns = Vec::with_capacity(n.min(r.remaining() / 10));
            for _ in 0..n {
                let flags = r.u8()?;
                columns.push(RelationColumn {
                    key: flags & 1 == 1,
                    name: r.cstr()?,
                    type_oid: r.u32()?,
                    type_modifier: r.i32()?,
                });
            }
            // pgoutput sends an empty namespace for pg_catalog.
            let namespace = if namespace.is_empty() { "pg_catalog".to_string() } else { namespace };
            Message::Relation { id, namespace, name, replica_identity, columns }
        }
        b'Y' => {
            let id = r.u32()?;
            let namespace = r.cstr()?;
            Message::Type { id, namespace, name: r.cstr()? }
        }
        b'I' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'N' => Message::Insert { relation, new: r.tuple()? },
                other => return Err(r.err(format!("expected N, found {:?}", other as char))),
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let mut old = None;
            let mut kind = r.u8()?;
            if kind == b'K' || kind == b'O' {
                old = Some((kind, r.tuple()?));
                kind = r.u8()?;
            }
            if kind != b'N' {
                return Err(r.err(format!("expected N, found {:?}", kind as char)));
            }
            Message::Update { relation, old, new: r.tuple()? }
        }
        b'D' => {
            let relation = r.u32()?;
            let kind = r.u8()?;
            if kind != b'K' && kind != b'O' {
                return Err(r.err(format!("expected K or O, found {:?}", kind as char)));
            }
            Message::Delete { relation, kind, old: r.tuple()? }
        }
        b'T' => {
            let n = r.u32()? as usize;
            let options = r.u8()?;
            let mut relations = Vec::with_capacity(n.min(r.remaining() / 4));
            for _ in 0..n {
                relations.push(r.u32()?);
            }
            Message::Truncate { options, relations }
        }
        b'M' => {
            let flags = r.u8()?;
            let lsn = r.u64()?;
            let prefix = r.cstr()?;
            let len = r.u32()? as usize;
            Message::LogicalMessage { transactional: flags & 1 == 1, lsn, prefix, content: r.bytes(len)? }
        }
        other => {
            return Err(r.err(format!("unsupported message type {:?} (protocol version 1 expected)", other as char)))
        }
    };
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(out: &mut Vec<u8>, vals: &[Option<&str>]) {
        out.extend_from_slice(&(vals.len() as i16).to_be_bytes());
        for v in vals {
            match v {
                None => out.push(b'n'),
                Some("<toast>") => out.push(b'u'),
                Some(s) => {
                    out.push(b't');
                    out.extend_from_slice(&(s.len() as i32).to_be_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
            }
        }
    }

    #[test]
    fn relation_and_rows() {
        let mut m = vec![b'R'];
        m.extend_from_slice(&16385u32.to_be_bytes());
        m.extend_from_slice(b"public\0orders\0d");
        m.extend_from_slice(&2i16.to_be_bytes());
        m.push(1);
        m.extend_from_slice(b"id\0");
        m.extend_from_slice(&23u32.to_be_bytes());
        m.extend_from_slice(&(-1i32).to_be_bytes());
        m.push(0);
        m.extend_from_slice(b"note\0");
        m.extend_from_slice(&25u32.to_be_bytes());
        m.extend_from_slice(&(-1i32).to_be_bytes());
        let msg = decode(&Bytes::from(m)).unwrap();
        let Message::Relation { id, namespace, name, replica_identity, columns } = msg else { panic!("{msg:?}") };
        assert_eq!((id, namespace.as_str(), name.as_str(), replica_identity), (16385, "public", "orders", b'd'));
        assert_eq!(columns.len(), 2);
        assert!(columns[0].key && !columns[1].key);
        assert_eq!(columns[1].type_oid, 25);

        let mut m = vec![b'U'];
        m.extend_from_slice(&16385u32.to_be_bytes());
        m.push(b'K');
        tuple(&mut m, &[Some("1"), None]);
        m.push(b'N');
        tuple(&mut m, &[Some("2"), Some("<toast>")]);
        let msg = decode(&Bytes::from(m)).unwrap();
        let Message::Update { relation, old, new } = msg else { panic!() };
        assert_eq!(relation, 16385);
        assert_eq!(old.unwrap().0, b'K');
        assert_eq!(new[0], TupleValue::Text(Bytes::from_static(b"2")));
        assert_eq!(new[1], TupleValue::UnchangedToast);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        for bytes in [&b"I\0\0"[..], b"U\0\0\0\x01N\0\x01t\0\0\0\x09ab", b"R\0\0\0\x01pub", b"", b"Z"] {
            assert!(decode(&Bytes::copy_from_slice(bytes)).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn truncate_and_begin() {
        let mut m = vec![b'T'];
        m.extend_from_slice(&2u32.to_be_bytes());
        m.push(2);
        m.extend_from_slice(&7u32.to_be_bytes());
        m.extend_from_slice(&8u32.to_be_bytes());
        assert_eq!(decode(&Bytes::from(m)).unwrap(), Message::Truncate { options: 2, relations: vec![7, 8] });
        let mut m = vec![b'B'];
        m.extend_from_slice(&0x1_0000_0010u64.to_be_bytes());
        m.extend_from_slice(&5i64.to_be_bytes());
        m.extend_from_slice(&42u32.to_be_bytes());
        assert_eq!(
            decode(&Bytes::from(m)).unwrap(),
            Message::Begin { final_lsn: 0x1_0000_0010, commit_time: 5, xid: 42 }
        );
    }
}

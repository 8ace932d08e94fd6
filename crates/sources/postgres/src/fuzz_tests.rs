//! Property tests (fuzzing) of everything this source decodes from bytes a
//! server or the storage hands it: pgoutput messages ([`crate::pgoutput`]),
//! tuple values to rows (the stream's relations, [`crate::values`]), LSNs,
//! and the stored position and checkpoint JSON read through the core's
//! position registry. Inputs are arbitrary bytes and valid encodings
//! mutated (bits flipped, bytes inserted, removed or cut off); each decoder
//! must answer every one without a panic and with an error that says what
//! is wrong. The copy-both framing, keepalive and error parsing live in
//! `pgwire-replication`; its public entry points (the message reader and
//! the CopyData, ErrorResponse and authentication parsers) are fuzzed here
//! the way its worker calls them, feeding the XLogData payloads to the
//! pgoutput decoder.
//!
//! [`deltaforge_testkit::fuzz::CASES`] cases per property; the regression
//! tests at the end hold inputs these properties found.

use bytes::Bytes;
use deltaforge_core::checkpoint::Checkpoint;
use deltaforge_core::Position;
use deltaforge_testkit::fuzz::{self, bytes as any_bytes, mutated, mutated_text};
use proptest::prelude::*;

use crate::config::TablePattern;
use crate::pgoutput::{decode, Message};
use crate::position::Lsn;
use crate::stream::relations::Relations;
use crate::values::{oid, to_json};

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

fn relation_message() -> Vec<u8> {
    let mut m = vec![b'R'];
    m.extend_from_slice(&16385u32.to_be_bytes());
    m.extend_from_slice(b"public\0orders\0d");
    m.extend_from_slice(&4i16.to_be_bytes());
    for (key, name, ty) in
        [(1u8, "id", oid::INT4), (0, "tags", 1009), (0, "raw", oid::BYTEA), (0, "at", oid::TIMESTAMPTZ)]
    {
        m.push(key);
        m.extend_from_slice(name.as_bytes());
        m.push(0);
        m.extend_from_slice(&ty.to_be_bytes());
        m.extend_from_slice(&(-1i32).to_be_bytes());
    }
    m
}

const ROW: [Option<&str>; 4] = [Some("7"), Some("{a,\"b c\",NULL}"), Some("\\x00ff"), Some("2024-02-29 13:45:00.5+00")];

/// One valid message of every kind this source decodes.
fn seeds() -> Vec<Vec<u8>> {
    let mut out = vec![relation_message()];
    let mut m = vec![b'B'];
    m.extend_from_slice(&0x1_0000_0010u64.to_be_bytes());
    m.extend_from_slice(&5i64.to_be_bytes());
    m.extend_from_slice(&42u32.to_be_bytes());
    out.push(m);
    let mut m = vec![b'C', 0];
    for v in [0x10u64, 0x20, 5] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    out.push(m);
    let mut m = vec![b'O'];
    m.extend_from_slice(&9u64.to_be_bytes());
    m.extend_from_slice(b"origin\0");
    out.push(m);
    let mut m = vec![b'Y'];
    m.extend_from_slice(&70000u32.to_be_bytes());
    m.extend_from_slice(b"public\0mood\0");
    out.push(m);
    let mut m = vec![b'I'];
    m.extend_from_slice(&16385u32.to_be_bytes());
    m.push(b'N');
    tuple(&mut m, &ROW);
    out.push(m);
    let mut m = vec![b'U'];
    m.extend_from_slice(&16385u32.to_be_bytes());
    m.push(b'O');
    tuple(&mut m, &ROW);
    m.push(b'N');
    tuple(&mut m, &[Some("8"), Some("<toast>"), None, Some("infinity")]);
    out.push(m);
    let mut m = vec![b'D'];
    m.extend_from_slice(&16385u32.to_be_bytes());
    m.push(b'K');
    tuple(&mut m, &[Some("7"), None, None, None]);
    out.push(m);
    let mut m = vec![b'T'];
    m.extend_from_slice(&2u32.to_be_bytes());
    m.push(1);
    m.extend_from_slice(&16385u32.to_be_bytes());
    m.extend_from_slice(&16386u32.to_be_bytes());
    out.push(m);
    let mut m = vec![b'M', 1];
    m.extend_from_slice(&0x30u64.to_be_bytes());
    m.extend_from_slice(b"deltaforge\0");
    m.extend_from_slice(&3u32.to_be_bytes());
    m.extend_from_slice(b"abc");
    out.push(m);
    out
}

/// Decodes `bytes` and, like the stream does, turns a row message into rows
/// of the relation `relations` knows; returns whether everything decoded.
fn decode_like_the_stream(relations: &mut Relations, bytes: Vec<u8>) -> bool {
    let msg = match decode(&Bytes::from(bytes)) {
        Ok(m) => m,
        Err(e) => {
            let text = e.to_string();
            assert!(text.starts_with("malformed pgoutput message") && !e.reason.is_empty(), "{text}");
            return false;
        }
    };
    let rows = match msg {
        Message::Relation { id, namespace, name, replica_identity, columns } => {
            relations.on_relation(id, namespace, name, replica_identity, columns);
            return true;
        }
        Message::Insert { relation, new } => vec![(relation, new, false)],
        Message::Update { relation, old, new } => {
            let mut v = vec![(relation, new, false)];
            if let Some((kind, old)) = old {
                v.push((relation, old, kind == b'K'));
            }
            v
        }
        Message::Delete { relation, kind, old } => vec![(relation, old, kind == b'K')],
        _ => return true,
    };
    let mut ok = true;
    for (id, tuple, key_only) in rows {
        let Some(rel) = relations.get(id) else { continue };
        let converted = if key_only { rel.key_row(tuple) } else { rel.row(tuple, None) };
        if let Err(e) = converted {
            assert!(e.to_string().contains("protocol error"), "{e}");
            ok = false;
        }
    }
    ok
}

fn relations() -> Relations {
    let mut r = Relations::new("fuzz".into(), vec![TablePattern::parse("public.*").unwrap()]);
    assert!(decode_like_the_stream(&mut r, relation_message()));
    r
}

/// Type OIDs whose text [`to_json`] interprets, plus one it does not.
const OIDS: [u32; 16] = [
    oid::INT4,
    oid::INT8,
    oid::FLOAT8,
    oid::BOOL,
    oid::BYTEA,
    oid::JSONB,
    oid::TIMESTAMP,
    oid::TIMESTAMPTZ,
    oid::TIME,
    oid::NUMERIC,
    1007,
    1009,
    1001,
    1185,
    3807,
    99_999,
];

fn value_text() -> impl Strategy<Value = String> {
    let seeds = [
        "{1,2,NULL}",
        "{{1,2},{3,4}}",
        "[0:1]={\"a b\",\"q\\\"uote\"}",
        "\\xdeadbeef",
        "a\\\\b\\001",
        "2024-02-29 13:45:00.123456+05:30",
        "13:45:00.25",
        "{\"a\": [1, null]}",
        "-9223372036854775808",
    ];
    prop_oneof![
        any::<String>(),
        "[{}\\\\\",x0-9aA é:.+ -]{0,40}",
        mutated_text(seeds.iter().map(|s| s.to_string()).collect()),
    ]
}

fn checkpoint_seeds() -> Vec<String> {
    vec![
        r#"{"position":{"lsn":"0/1A2B3C4D","tx_id":1234},"sinks":{"out":{"lsn":"1/0"}},"written_at":"2026-11-27T13:34:07.123456Z"}"#.into(),
        r#"{"position":{"lsn":"FFFFFFFF/FFFFFFFF"},"written_at":"2026-11-27T13:34:07Z"}"#.into(),
    ]
}

/// Backend messages as the server frames them (tag, length, payload): an
/// XLogData and a keepalive in CopyData, an ErrorResponse, an
/// authentication request.
fn frame_seeds() -> Vec<Vec<u8>> {
    let frame = |tag: u8, payload: &[u8]| {
        let mut f = vec![tag];
        f.extend_from_slice(&(payload.len() as i32 + 4).to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    let mut xlog = vec![b'w'];
    for v in [0x10u64, 0x20, 5] {
        xlog.extend_from_slice(&v.to_be_bytes());
    }
    xlog.extend_from_slice(&seeds()[5]);
    let mut keepalive = vec![b'k'];
    keepalive.extend_from_slice(&0x20u64.to_be_bytes());
    keepalive.extend_from_slice(&5i64.to_be_bytes());
    keepalive.push(1);
    let error = b"SERROR\0C57P01\0Mterminating connection due to administrator command\0\0".to_vec();
    let mut auth = 10i32.to_be_bytes().to_vec();
    auth.extend_from_slice(b"SCRAM-SHA-256\0\0");
    vec![[frame(b'd', &xlog), frame(b'd', &keepalive)].concat(), frame(b'E', &error), frame(b'R', &auth)]
}

/// Reads every backend message of `bytes` the way `pgwire-replication`'s
/// worker does (its cancellation-safe reader, with the limit on one
/// message's size) and parses each as the worker would.
fn read_frames(bytes: &[u8], max_message: usize) {
    use pgwire_replication::protocol::framing::MessageReader;
    use pgwire_replication::protocol::replication::{parse_copy_data, ReplicationCopyData};
    use pgwire_replication::protocol::{parse_auth_request, parse_error_response};
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let mut rd = bytes;
        let mut reader = MessageReader::new().with_max_message_size(max_message);
        while let Ok(msg) = reader.read(&mut rd).await {
            assert!(msg.payload.len() <= max_message);
            match msg.tag {
                b'd' => {
                    if let Ok(ReplicationCopyData::XLogData { data, .. }) = parse_copy_data(msg.payload) {
                        decode_like_the_stream(&mut relations(), data.to_vec());
                    }
                }
                b'E' => {
                    let _ = parse_error_response(&msg.payload);
                }
                b'R' => {
                    let _ = parse_auth_request(&msg.payload);
                }
                _ => {}
            }
        }
    });
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn copy_both_frames_never_panic(bytes in prop_oneof![any_bytes(64), mutated(frame_seeds())]) {
        read_frames(&bytes, 1 << 16);
    }

    #[test]
    fn pgoutput_arbitrary_bytes_never_panic(tag in prop::sample::select(b"BCORYIUDTMZ".to_vec()), rest in any_bytes(96)) {
        let mut m = vec![tag];
        m.extend(rest);
        decode_like_the_stream(&mut relations(), m);
    }

    #[test]
    fn pgoutput_mutated_messages_never_panic(m in mutated(seeds())) {
        decode_like_the_stream(&mut relations(), m);
    }

    #[test]
    fn text_values_never_panic(type_oid in prop::sample::select(OIDS.to_vec()), text in value_text()) {
        let _ = to_json(type_oid, &text);
    }

    #[test]
    fn lsn_text_never_panics(text in prop_oneof![any::<String>(), "[0-9A-Fa-f/+-]{0,20}"]) {
        if let Err(e) = text.parse::<Lsn>() {
            prop_assert!(e.contains("invalid LSN"), "{}", e);
        }
    }

    #[test]
    fn stored_checkpoints_never_panic(text in prop_oneof![any::<String>(), mutated_text(checkpoint_seeds())]) {
        if let Ok(cp) = serde_json::from_str::<Checkpoint>(&text) {
            // Whatever reads back must write back and read back the same.
            let again: Checkpoint = serde_json::from_str(&serde_json::to_string(&cp).unwrap()).unwrap();
            prop_assert_eq!(again, cp);
        }
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) {
            if let Err(e) = Position::from_json(&json) {
                prop_assert!(e.contains("unrecognised source position"), "{}", e);
            }
        }
    }
}

#[test]
fn bytea_hex_with_multibyte_text_is_kept_as_text() {
    // Found by `text_values_never_panic`: slicing the hex digits two bytes
    // at a time cut a multi-byte character in half.
    assert_eq!(to_json(oid::BYTEA, "\\xaéb"), serde_json::json!("\\xaéb"));
    assert_eq!(to_json(1001, "{\"\\\\xé0\"}"), serde_json::json!(["\\xé0"]));
}

#[test]
fn deeply_nested_array_text_is_kept_as_text() {
    // PostgreSQL arrays have at most 6 dimensions; a deeper literal is not
    // one the server prints, and must not recurse the stack away.
    let deep = format!("{}1{}", "{".repeat(100_000), "}".repeat(100_000));
    assert_eq!(to_json(1007, &deep), serde_json::Value::String(deep.clone()));
    assert_eq!(to_json(1007, "{{{{{{1}}}}}}"), serde_json::json!([[[[[[1]]]]]]));
}

#[test]
fn huge_counts_do_not_allocate_what_they_claim() {
    // A column count of 32767 with no columns behind it, and a Truncate
    // announcing 4 billion relations: errors, after allocating at most what
    // the message itself can hold.
    let mut m = vec![b'I'];
    m.extend_from_slice(&1u32.to_be_bytes());
    m.push(b'N');
    m.extend_from_slice(&i16::MAX.to_be_bytes());
    assert!(decode(&Bytes::from(m)).unwrap_err().reason.contains("truncated"));
    let mut m = vec![b'T'];
    m.extend_from_slice(&u32::MAX.to_be_bytes());
    m.push(0);
    assert!(decode(&Bytes::from(m)).unwrap_err().reason.contains("truncated"));
    let mut m = vec![b'M', 0];
    m.extend_from_slice(&0u64.to_be_bytes());
    m.extend_from_slice(b"p\0");
    m.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(decode(&Bytes::from(m)).unwrap_err().reason.contains("truncated"));
}

#[test]
fn a_frame_claiming_more_than_the_limit_is_refused_before_buffering() {
    // A length field of 2 GiB (i32::MAX) with a 64 KiB limit: an error
    // naming both sizes, nothing allocated for it.
    use pgwire_replication::protocol::framing::MessageReader;
    let mut bytes = vec![b'd'];
    bytes.extend_from_slice(&i32::MAX.to_be_bytes());
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let err =
        rt.block_on(MessageReader::new().with_max_message_size(1 << 16).read(&mut &bytes[..])).unwrap_err().to_string();
    assert!(err.contains("2147483643") && err.contains("65536"), "{err}");
}

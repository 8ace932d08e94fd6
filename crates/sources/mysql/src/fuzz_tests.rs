//! Property tests (fuzzing) of everything this source decodes from bytes a
//! server or the storage hands it: binlog events read the way the stream
//! reads them (header, `read_data`, TABLE_MAP to a [`TableDecoder`] and to a
//! catalogue schema, rows events to rows, MySQL GTID and PREVIOUS_GTIDS
//! events), MariaDB's GTID and GTID_LIST events (parsed here), the GTID set
//! texts of both flavours, column values to JSON, and the stored position
//! and checkpoint JSON read through the core's position registry.
//!
//! Inputs are arbitrary bytes and valid encodings mutated (bits flipped,
//! bytes inserted, removed or cut off); the event header's size field is
//! kept equal to the bytes that follow, as `mysql_async` hands over one
//! whole packet per event (a size that disagrees with the packet is the
//! subject of [`header_size_beyond_the_packet_is_an_error`]), and the
//! counts inside a body go through [`crate::event_bounds`] first, as in the
//! stream. Each decoder
//! must answer every input without a panic, and an error names what is
//! wrong. [`deltaforge_testkit::fuzz::CASES`] cases per property.

use std::sync::Arc;

use deltaforge_core::checkpoint::Checkpoint;
use deltaforge_core::Position;
use deltaforge_testkit::fuzz::{self, bytes as any_bytes, mutated, mutated_text};
use mysql_async::binlog::events::{Event as BinlogEvent, EventData, FormatDescriptionEvent, TableMapEvent};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::binlog::BinlogVersion;
use mysql_async::Value as MyValue;
use proptest::prelude::*;

use crate::decode::{decode_rows, snapshot_value, value, Charset, Kind, TableDecoder};
use crate::gtid::{parse_mariadb_gtid, parse_mariadb_gtid_list, MariaGtidState, MysqlGtidSet};
use crate::mysql8_tests::{event, row_image, rows_v2_header, table_map, JSONB_K7, UUID};
use crate::schema::{from_table_map, parse_labels, Collations, ColumnInfo};
use crate::tablemap_tests::{catalogue, TABLE_MAP_BODY};

/// Reads one event the way the stream does, then decodes what the source
/// decodes of it; panics only through a bug (the property fails).
fn decode_like_the_stream(tme: &TableMapEvent<'static>, bytes: &[u8]) {
    let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
    let Ok(ev) = BinlogEvent::read(&fde, bytes) else { return };
    if let Err(e) = crate::event_bounds::check(ev.header().event_type_raw(), ev.data()) {
        assert!(e.contains("event") || e.contains("metadata"), "{e}");
        return;
    }
    let data = match ev.read_data() {
        Ok(Some(d)) => d,
        Ok(None) | Err(_) => return,
    };
    match data {
        EventData::TableMapEvent(t) => {
            if let Err(e) = TableDecoder::build(&t, None, None) {
                assert!(e.starts_with("column "), "{e}");
            }
            let _ = TableDecoder::build(&t, Some(&catalogue()), Some(1));
            let _ = from_table_map(&t, &Collations::builtin());
        }
        EventData::RowsEvent(rows) => {
            let dec = TableDecoder::build(tme, None, None).expect("the seed TABLE_MAP builds");
            if let Err(e) = decode_rows(&dec, tme, &rows) {
                assert!(!e.is_empty());
            }
        }
        EventData::GtidEvent(g) => {
            let _ = MysqlGtidSet::event_gtid(&g);
            MysqlGtidSet::default().apply_event(&g);
        }
        EventData::PreviousGtidsEvent(p) => {
            let set = MysqlGtidSet::from_previous(&p);
            if let Ok(sids) = set.to_sids() {
                assert_eq!(sids.is_empty(), set.is_empty());
            }
        }
        EventData::RotateEvent(r) => {
            let _ = String::from_utf8_lossy(r.name_raw());
        }
        EventData::QueryEvent(q) => {
            let _ = crate::ddl::ddl_tables(&q.query());
        }
        _ => {}
    }
}

fn mysql_tme() -> TableMapEvent<'static> {
    let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
    match BinlogEvent::read(&fde, &table_map()[..]).unwrap().read_data().unwrap().unwrap() {
        EventData::TableMapEvent(t) => t.into_owned(),
        other => panic!("not a table map: {other:?}"),
    }
}

/// Event bodies (type code, body) of every kind the stream decodes.
fn event_seeds() -> Vec<(u8, Vec<u8>)> {
    let mut out = vec![(19u8, table_map()[19..].to_vec()), (19, TABLE_MAP_BODY.to_vec())];
    let mut rows = rows_v2_header(false);
    rows.extend(row_image(u64::MAX, "günther", Some(&JSONB_K7)));
    rows.extend(row_image(7, "x", None));
    out.push((30, rows));
    let mut rows = rows_v2_header(true);
    rows.extend(row_image(1, "old", None));
    rows.extend(row_image(1, "new", Some(&JSONB_K7)));
    out.push((31, rows.clone()));
    out.push((32, rows));
    let mut g = vec![1u8];
    g.extend_from_slice(&UUID);
    g.extend_from_slice(&42u64.to_le_bytes());
    g.push(2);
    g.extend_from_slice(&10u64.to_le_bytes());
    g.extend_from_slice(&11u64.to_le_bytes());
    out.push((33, g));
    let mut p = 1u64.to_le_bytes().to_vec();
    p.extend_from_slice(&UUID);
    p.extend_from_slice(&2u64.to_le_bytes());
    for v in [1u64, 6, 7, 10] {
        p.extend_from_slice(&v.to_le_bytes());
    }
    out.push((35, p));
    let mut r = 4u64.to_le_bytes().to_vec();
    r.extend_from_slice(b"binlog.000042");
    out.push((4, r));
    out.push((16, 77u64.to_le_bytes().to_vec()));
    let mut q = Vec::new();
    q.extend_from_slice(&9u32.to_le_bytes()); // thread id
    q.extend_from_slice(&0u32.to_le_bytes()); // exec time
    q.push(4); // schema length
    q.extend_from_slice(&0u16.to_le_bytes()); // error code
    q.extend_from_slice(&0u16.to_le_bytes()); // status vars length
    q.extend_from_slice(b"shop\0ALTER TABLE items ADD COLUMN z INT");
    out.push((2, q));
    out
}

fn binlog_event() -> impl Strategy<Value = Vec<u8>> {
    let seeds = event_seeds();
    let types: Vec<u8> = seeds.iter().map(|(t, _)| *t).collect();
    let mutated_body = (0..seeds.len()).prop_flat_map(move |i| {
        let (ty, body) = seeds[i].clone();
        mutated(vec![body]).prop_map(move |b| event(ty, 500, &b))
    });
    let any_body = (prop::sample::select(types), any_bytes(80)).prop_map(|(ty, b)| event(ty, 500, &b));
    prop_oneof![3 => mutated_body, 1 => any_body]
}

fn kind() -> impl Strategy<Value = Kind> {
    let labels: Arc<[String]> = vec!["a".to_string(), "b".to_string()].into();
    prop::sample::select(vec![
        Kind::Int { bits: 8, unsigned: false },
        Kind::Int { bits: 24, unsigned: true },
        Kind::Int { bits: 64, unsigned: true },
        Kind::Float,
        Kind::Double,
        Kind::Decimal,
        Kind::Bit,
        Kind::Enum(labels.clone()),
        Kind::Set(labels),
        Kind::Text(Charset::Utf8),
        Kind::Text(Charset::Latin1),
        Kind::Binary,
        Kind::JsonText,
        Kind::Json,
        Kind::Geometry,
        Kind::Date,
        Kind::Time(3),
        Kind::DateTime(0),
        Kind::DateTime(6),
        Kind::Timestamp(0),
        Kind::Timestamp(6),
        Kind::Year,
        Kind::Other,
    ])
}

fn my_value() -> impl Strategy<Value = MyValue> {
    prop_oneof![
        Just(MyValue::NULL),
        any_bytes(24).prop_map(MyValue::Bytes),
        "-?[0-9]{0,20}(\\.[0-9]{0,9})?".prop_map(|s| MyValue::Bytes(s.into_bytes())),
        any::<i64>().prop_map(MyValue::Int),
        any::<u64>().prop_map(MyValue::UInt),
        any::<f32>().prop_map(MyValue::Float),
        any::<f64>().prop_map(MyValue::Double),
        any::<(u16, u8, u8, u8, u8, u8, u32)>()
            .prop_map(|(y, mo, d, h, mi, s, us)| MyValue::Date(y, mo, d, h, mi, s, us)),
        any::<(bool, u32, u8, u8, u8, u32)>().prop_map(|(n, d, h, m, s, us)| MyValue::Time(n, d, h, m, s, us)),
    ]
}

const MYSQL_UUID: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

fn checkpoint_seeds() -> Vec<String> {
    vec![
        format!(
            r#"{{"position":{{"file":"binlog.000042","pos":12345,"gtid_set":"{MYSQL_UUID}:1-5:7"}},"sinks":{{"out":{{"file":"binlog.000043","pos":4}}}},"written_at":"2026-11-27T13:34:07.123456Z"}}"#
        ),
        r#"{"position":{"file":"mariadb-bin.000001","pos":4,"gtid_set":"0-1-42,1-2-7"},"written_at":"2026-11-27T13:34:07Z"}"#.into(),
    ]
}

fn ddl_seeds() -> Vec<String> {
    [
        "ALTER ONLINE TABLE IF EXISTS `sh``op`.items ADD COLUMN z INT",
        "CREATE OR REPLACE TEMPORARY TABLE IF NOT EXISTS s.t (id INT)",
        "CREATE UNIQUE INDEX i ON `db`.`t` (a)",
        "DROP TEMPORARY TABLE IF EXISTS a, b.c /* comment */",
        "DROP INDEX i ON t",
        "RENAME TABLE a TO b, c.d TO e.f",
        "TRUNCATE TABLE t",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn catalogue_column(data_type: &str, column_type: &str) -> ColumnInfo {
    ColumnInfo {
        name: "c".into(),
        data_type: data_type.into(),
        column_type: column_type.into(),
        unsigned: column_type.contains("unsigned"),
        nullable: true,
        charset: Some("utf8mb4".into()),
        json: false,
        labels: parse_labels(column_type),
    }
}

proptest! {
    #![proptest_config(fuzz::config())]

    #[test]
    fn ddl_texts_never_panic(q in prop_oneof![any::<String>(), mutated_text(ddl_seeds())]) {
        if let Some(tables) = crate::ddl::ddl_tables(&q) {
            prop_assert!(tables.iter().all(|(_, t)| !t.is_empty() || q.contains("``")));
        }
    }

    #[test]
    fn catalogue_column_types_never_panic(
        data_type in prop::sample::select(vec!["enum", "set", "datetime", "time", "timestamp", "varchar", "bit"]),
        column_type in prop_oneof![
            any::<String>(),
            "[a-z]{0,8}[()]?[0-9a-z',\\\\() ]{0,24}( unsigned)?",
            mutated_text(vec!["enum('s','m''x','\\\\')".into(), "datetime(6)".into(), "set('a','b')".into()]),
        ],
    ) {
        let col = catalogue_column(data_type, &column_type);
        let kind = Kind::from_column(&col);
        if let Kind::DateTime(fsp) | Kind::Time(fsp) | Kind::Timestamp(fsp) = kind {
            prop_assert!(fsp <= 6);
        }
    }

    #[test]
    fn binlog_events_never_panic(bytes in binlog_event()) {
        decode_like_the_stream(&mysql_tme(), &bytes);
    }

    #[test]
    fn column_values_never_panic(kind in kind(), v in my_value()) {
        if let Err(e) = value(&kind, &BinlogValue::Value(v.clone())) {
            prop_assert!(e.starts_with("bad "), "{}", e);
        }
        let _ = snapshot_value(&kind, &v);
    }

    #[test]
    fn mariadb_gtid_events_never_panic(server in any::<u32>(), body in prop_oneof![any_bytes(40), mutated(vec![
        [42u64.to_le_bytes().as_slice(), &0u32.to_le_bytes(), &[1u8, 0, 0, 0, 0, 0, 0]].concat(),
        [7u64.to_le_bytes().as_slice(), &3u32.to_le_bytes(), &[2u8], &99u64.to_le_bytes()].concat(),
    ])]) {
        match parse_mariadb_gtid(&body, server) {
            Ok(g) => prop_assert_eq!(g.gtid.server, server),
            Err(e) => prop_assert!(e.contains("MariaDB GTID event"), "{}", e),
        }
    }

    #[test]
    fn mariadb_gtid_lists_never_panic(body in prop_oneof![any_bytes(72), mutated(vec![
        [2u32.to_le_bytes().as_slice(), &0u32.to_le_bytes(), &1u32.to_le_bytes(), &42u64.to_le_bytes(),
         &1u32.to_le_bytes(), &2u32.to_le_bytes(), &7u64.to_le_bytes()].concat(),
    ])]) {
        match parse_mariadb_gtid_list(&body) {
            Ok(list) => prop_assert!(4 + list.len() * 16 <= body.len()),
            Err(e) => prop_assert!(e.contains("GTID_LIST"), "{}", e),
        }
    }

    #[test]
    fn gtid_set_texts_never_panic(text in prop_oneof![
        any::<String>(),
        "[0-9a-fA-F:,-]{0,60}",
        mutated_text(vec![
            format!("{MYSQL_UUID}:1-5:7,\n00000000-0000-0000-0000-000000000001:1"),
            format!("{MYSQL_UUID}:tag:1-5"),
            "0-1-42,1-2-7".into(),
        ]),
    ]) {
        match MysqlGtidSet::parse(&text) {
            // What parses prints back to a text that parses to the same set,
            // and converts to the SIDs a GTID stream starts from.
            Ok(set) => {
                prop_assert_eq!(MysqlGtidSet::parse(&set.to_string()).unwrap(), set.clone());
                if let Err(e) = set.to_sids() {
                    prop_assert!(e.contains("GTID set entry"), "{}", e);
                }
            }
            Err(e) => prop_assert!(e.contains("MySQL GTID set"), "{}", e),
        }
        match MariaGtidState::parse(&text) {
            Ok(st) => prop_assert_eq!(MariaGtidState::parse(&st.to_string()).unwrap(), st),
            Err(e) => prop_assert!(e.contains("MariaDB GTID"), "{}", e),
        }
    }

    #[test]
    fn stored_checkpoints_never_panic(text in prop_oneof![any::<String>(), mutated_text(checkpoint_seeds())]) {
        if let Ok(cp) = serde_json::from_str::<Checkpoint>(&text) {
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

/// An event whose header announces more bytes than the packet holds makes
/// `mysql_common`'s `Event::read` panic (found by reading it while writing
/// these properties: it unwraps the short read). The stream polls through
/// [`crate::stream::guarded`], which turns that panic into an error naming
/// the damaged packet; this is the input, through the same guard.
#[test]
fn header_size_beyond_the_packet_is_an_error() {
    let mut packet = event(16, 500, &77u64.to_le_bytes());
    packet[9..13].copy_from_slice(&(19u32 + 64).to_le_bytes()); // size: 64 body bytes, 8 present
    let read = async {
        let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
        Some(BinlogEvent::read(&fde, &packet[..]).map_err(mysql_async::Error::from))
    };
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let err = rt.block_on(crate::stream::guarded(read)).unwrap().unwrap_err().to_string();
    assert!(err.contains("could not decode a binlog event") && err.contains("damaged"), "{err}");
}

/// Found by `binlog_events_never_panic`: a TABLE_MAP whose optional
/// metadata cannot be read (here a byte inserted into the column metadata
/// shifts everything after it) left the decoder's per-column metadata lists
/// empty, and building the decoder indexed past them.
#[test]
fn table_map_with_unreadable_optional_metadata_builds() {
    let bytes: &[u8] = &[
        0, 241, 83, 101, 19, 1, 0, 0, 0, 70, 0, 0, 0, 244, 1, 0, 0, 0, 0, 42, 0, 0, 0, 0, 0, 1, 0, 4, 115, 104, 111,
        112, 0, 5, 105, 116, 101, 109, 115, 0, 3, 8, 15, 245, 3, 0, 160, 0, 4, 6, 1, 1, 128, 2, 1, 45, 4, 12, 2, 105,
        100, 4, 110, 97, 109, 101, 3, 100, 111, 99,
    ];
    let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
    let ev = BinlogEvent::read(&fde, bytes).unwrap();
    let Some(EventData::TableMapEvent(tme)) = ev.read_data().unwrap() else { panic!("not a TABLE_MAP") };
    let dec = TableDecoder::build(&tme, None, None).unwrap();
    assert_eq!(dec.kinds[0], Kind::Int { bits: 64, unsigned: false });
    decode_like_the_stream(&mysql_tme(), bytes);
}

/// Found by `catalogue_column_types_never_panic`: a `)` only before the
/// `(` made the label parser slice backwards.
#[test]
fn column_type_with_a_closing_parenthesis_first_has_no_labels() {
    assert_eq!(parse_labels(")enum("), Vec::<String>::new());
    assert_eq!(parse_labels(")x('a'"), vec!["a".to_string()]);
    assert_eq!(parse_labels("enum('a','b''c')"), vec!["a".to_string(), "b'c".to_string()]);
}

/// The count checks pass every valid event body the properties start from
/// (among them a MariaDB 10.11 TABLE_MAP with ENUM and SET labels, and
/// MySQL 8's PREVIOUS_GTIDS), so they refuse only what does not fit.
#[test]
fn count_checks_pass_valid_events() {
    for (type_code, body) in event_seeds() {
        crate::event_bounds::check(type_code, &body).unwrap_or_else(|e| panic!("type {type_code}: {e}"));
    }
}

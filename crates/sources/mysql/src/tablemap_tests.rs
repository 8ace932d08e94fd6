//! Unit tests on the captured bytes of a MariaDB 10.11 TABLE_MAP event
//! written with `binlog_row_metadata=FULL` (taken with `mariadb-binlog
//! --hexdump` from the test server; the CRC32 is dropped and the event size
//! adjusted so that it reads without checksums): the schema built from its
//! optional metadata must describe the table exactly as `information_schema`
//! does, layout for layout, and decode to the same value mapping.

use mysql_async::binlog::events::{Event as BinlogEvent, EventData, FormatDescriptionEvent, TableMapEvent};
use mysql_async::binlog::BinlogVersion;

use crate::decode::{Charset, Kind, TableDecoder};
use crate::schema::{from_table_map, parse_labels, Collations, ColumnInfo, TableSchema};

/// `CREATE TABLE tmcap.t (id INT UNSIGNED NOT NULL, k BIGINT NOT NULL,
/// d DECIMAL(10,2) UNSIGNED, f FLOAT, b BIT(12), e ENUM('s','m''x'),
/// s SET('a','b'), c CHAR(10), vc VARCHAR(100) CHARACTER SET latin1, tx TEXT,
/// bin BINARY(4), vb VARBINARY(10), bl MEDIUMBLOB, tm TIME(3), dtm DATETIME(6),
/// ts TIMESTAMP(3) NULL, yr YEAR, j JSON, g POINT, PRIMARY KEY (id, k))
/// CHARACTER SET utf8mb4`: the body of its TABLE_MAP event.
pub(crate) const TABLE_MAP_BODY: &[u8] = &[
    0x54, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x05, 0x74, 0x6d, 0x63, 0x61, 0x70, 0x00, 0x01, 0x74, 0x00, 0x13,
    0x03, 0x08, 0xf6, 0x04, 0x10, 0xfe, 0xfe, 0xfe, 0x0f, 0xfc, 0xfe, 0x0f, 0xfc, 0x13, 0x12, 0x11, 0x0d, 0xfc, 0xff,
    0x18, 0x0a, 0x02, 0x04, 0x04, 0x01, 0xf7, 0x01, 0xf8, 0x01, 0xfe, 0x28, 0x64, 0x00, 0x02, 0xfe, 0x04, 0x0a, 0x00,
    0x03, 0x03, 0x06, 0x03, 0x04, 0x04, 0xfc, 0xff, 0x07, 0x01, 0x01, 0xa8, 0x03, 0x08, 0x2d, 0x08, 0x2d, 0x3f, 0x3f,
    0x3f, 0x2e, 0x3f, 0x07, 0x01, 0x01, 0x04, 0x32, 0x02, 0x69, 0x64, 0x01, 0x6b, 0x01, 0x64, 0x01, 0x66, 0x01, 0x62,
    0x01, 0x65, 0x01, 0x73, 0x01, 0x63, 0x02, 0x76, 0x63, 0x02, 0x74, 0x78, 0x03, 0x62, 0x69, 0x6e, 0x02, 0x76, 0x62,
    0x02, 0x62, 0x6c, 0x02, 0x74, 0x6d, 0x03, 0x64, 0x74, 0x6d, 0x02, 0x74, 0x73, 0x02, 0x79, 0x72, 0x01, 0x6a, 0x01,
    0x67, 0x0a, 0x01, 0x2d, 0x05, 0x05, 0x02, 0x01, 0x61, 0x01, 0x62, 0x06, 0x07, 0x02, 0x01, 0x73, 0x03, 0x6d, 0x27,
    0x78, 0x08, 0x02, 0x00, 0x01,
];

/// The rows `information_schema.COLUMNS` returned for that table on the
/// same server: name, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME, nullable.
const CATALOGUE: &[(&str, &str, &str, Option<&str>, bool)] = &[
    ("id", "int", "int(10) unsigned", None, false),
    ("k", "bigint", "bigint(20)", None, false),
    ("d", "decimal", "decimal(10,2) unsigned", None, true),
    ("f", "float", "float", None, true),
    ("b", "bit", "bit(12)", None, true),
    ("e", "enum", "enum('s','m''x')", Some("utf8mb4"), true),
    ("s", "set", "set('a','b')", Some("utf8mb4"), true),
    ("c", "char", "char(10)", Some("utf8mb4"), true),
    ("vc", "varchar", "varchar(100)", Some("latin1"), true),
    ("tx", "text", "text", Some("utf8mb4"), true),
    ("bin", "binary", "binary(4)", None, true),
    ("vb", "varbinary", "varbinary(10)", None, true),
    ("bl", "mediumblob", "mediumblob", None, true),
    ("tm", "time", "time(3)", None, true),
    ("dtm", "datetime", "datetime(6)", None, true),
    ("ts", "timestamp", "timestamp(3)", None, true),
    ("yr", "year", "year(4)", None, true),
    ("j", "longtext", "longtext", Some("utf8mb4"), true),
    ("g", "point", "point", None, true),
];

pub(crate) fn catalogue() -> TableSchema {
    TableSchema {
        db: "tmcap".into(),
        table: "t".into(),
        columns: CATALOGUE
            .iter()
            .map(|(name, dt, ct, cs, nullable)| ColumnInfo {
                name: name.to_string(),
                data_type: dt.to_string(),
                column_type: ct.to_string(),
                unsigned: ct.contains("unsigned"),
                nullable: *nullable,
                charset: cs.map(str::to_string),
                // MariaDB's JSON: LONGTEXT with a json_valid check.
                json: *name == "j",
                labels: if *dt == "enum" || *dt == "set" { parse_labels(ct) } else { Vec::new() },
            })
            .collect(),
        primary_key: vec!["id".into(), "k".into()],
    }
}

fn table_map_event() -> BinlogEvent {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&0x6b09_baf4u32.to_le_bytes()); // timestamp
    bytes.push(19); // TABLE_MAP
    bytes.extend_from_slice(&1u32.to_le_bytes()); // server id
    bytes.extend_from_slice(&((19 + TABLE_MAP_BODY.len()) as u32).to_le_bytes());
    bytes.extend_from_slice(&888_602_640u32.to_le_bytes()); // log pos
    bytes.extend_from_slice(&0u16.to_le_bytes()); // flags
    bytes.extend_from_slice(TABLE_MAP_BODY);
    let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
    BinlogEvent::read(&fde, &bytes[..]).expect("event parses")
}

fn table_map(ev: &BinlogEvent) -> TableMapEvent<'static> {
    match ev.read_data().expect("data parses") {
        Some(EventData::TableMapEvent(t)) => t.into_owned(),
        other => panic!("not a TABLE_MAP: {other:?}"),
    }
}

#[test]
fn full_metadata_describes_the_table_like_the_catalogue() {
    let ev = table_map_event();
    let tme = table_map(&ev);
    let got = from_table_map(&tme, &Collations::builtin()).unwrap().expect("full metadata");
    assert_eq!((got.db.as_str(), got.table.as_str()), ("tmcap", "t"));
    let types: Vec<(&str, &str, &str, Option<&str>, bool)> = got
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.data_type.as_str(), c.column_type.as_str(), c.charset.as_deref(), c.nullable))
        .collect();
    assert_eq!(
        types,
        vec![
            ("id", "int", "int unsigned", None, false),
            ("k", "bigint", "bigint", None, false),
            ("d", "decimal", "decimal(10,2) unsigned", None, true),
            ("f", "float", "float", None, true),
            ("b", "bit", "bit(12)", None, true),
            ("e", "enum", "enum('s','m''x')", Some("utf8mb4"), true),
            ("s", "set", "set('a','b')", Some("utf8mb4"), true),
            ("c", "char", "char(10)", Some("utf8mb4"), true),
            ("vc", "varchar", "varchar(100)", Some("latin1"), true),
            ("tx", "text", "text", Some("utf8mb4"), true),
            ("bin", "binary", "binary(4)", None, true),
            ("vb", "varbinary", "varbinary(10)", None, true),
            ("bl", "mediumblob", "mediumblob", None, true),
            ("tm", "time", "time(3)", None, true),
            ("dtm", "datetime", "datetime(6)", None, true),
            ("ts", "timestamp", "timestamp(3)", None, true),
            ("yr", "year", "year", None, true),
            ("j", "longtext", "longtext", Some("utf8mb4"), true),
            ("g", "point", "point", None, true),
        ]
    );
    assert_eq!(got.columns[5].labels, ["s", "m'x"]);
    assert_eq!(got.columns[6].labels, ["a", "b"]);
    assert_eq!(got.primary_key, ["id", "k"]);
    // The binlog cannot tell JSON from LONGTEXT on MariaDB.
    assert!(!got.columns[17].json);

    let cat = catalogue();
    assert_ne!(got.layout(), cat.layout(), "without the JSON hint the layouts differ");
    let mut hinted = got.clone();
    hinted.apply_json_hints(&[&cat]);
    assert!(hinted.columns[17].json);
    assert_eq!(hinted.layout(), cat.layout());

    // Both descriptions give the same value mapping, column for column.
    let from_binlog = TableDecoder::build(&tme, Some(&hinted), Some(2)).unwrap();
    let from_catalogue = TableDecoder::build(&tme, Some(&cat), Some(1)).unwrap();
    assert!(from_binlog.schema_matched && from_catalogue.schema_matched);
    assert_eq!(from_binlog.kinds, from_catalogue.kinds);
    assert_eq!(from_binlog.columns, from_catalogue.columns);
    assert_eq!(from_binlog.key_columns, from_catalogue.key_columns);
    assert_eq!(from_binlog.kinds[0], Kind::Int { bits: 32, unsigned: true });
    assert_eq!(from_binlog.kinds[8], Kind::Text(Charset::Latin1));
    assert_eq!(from_binlog.kinds[10], Kind::Binary);
    assert_eq!(from_binlog.kinds[15], Kind::Timestamp(3));
    assert_eq!(from_binlog.kinds[17], Kind::JsonText);
    assert_eq!(from_binlog.kinds[18], Kind::Geometry);
}

#[test]
fn layout_changes_are_seen() {
    let tme = table_map(&table_map_event());
    let got = from_table_map(&tme, &Collations::builtin()).unwrap().unwrap();
    let base = got.layout();
    let mut changed = got.clone();
    changed.columns[8].column_type = "varchar(200)".into();
    assert_ne!(changed.layout(), base, "a VARCHAR length is part of the layout");
    let mut changed = got.clone();
    changed.columns[1].unsigned = true;
    assert_ne!(changed.layout(), base, "signedness is part of the layout");
    let mut changed = got.clone();
    changed.columns[9].charset = Some("latin1".into());
    assert_ne!(changed.layout(), base, "the charset is part of the layout");
    let mut same = got.clone();
    same.columns[0].column_type = "int(10) unsigned zerofill".into();
    assert_eq!(same.layout(), base, "display width and ZEROFILL are not");
}

#[test]
fn minimal_metadata_falls_back() {
    // The same event without optional metadata (binlog_row_metadata=MINIMAL
    // would keep signedness and charsets but never names).
    let ev = table_map_event();
    let tme = table_map(&ev);
    let full = TABLE_MAP_BODY.len();
    // Optional metadata starts after the null bitmap: table id (6), flags
    // (2), "tmcap" and "t" with length and NUL (7 + 3), column count (1),
    // types (n), metadata length (1) and metadata, bitmap.
    let n = tme.columns_count() as usize;
    let head = 6 + 2 + 7 + 3 + 1 + n;
    let meta_len = TABLE_MAP_BODY[head] as usize;
    let opt_start = head + 1 + meta_len + n.div_ceil(8);
    assert!(opt_start < full);
    let mut bytes = Vec::new();
    let body = &TABLE_MAP_BODY[..opt_start];
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.push(19);
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&((19 + body.len()) as u32).to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&0u16.to_le_bytes());
    bytes.extend_from_slice(body);
    let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
    let ev = BinlogEvent::read(&fde, &bytes[..]).unwrap();
    let tme = table_map(&ev);
    assert_eq!(tme.columns_count(), 19);
    assert_eq!(from_table_map(&tme, &Collations::builtin()).unwrap(), None);
}

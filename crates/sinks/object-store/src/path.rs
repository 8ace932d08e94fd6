//! The directory template of committed files (`${table}/date=${date}`) and
//! the deterministic names of files and manifests.
//!
//! `${date}` and `${hour}` come from the event's commit time (UTC), so a
//! replayed event lands in the same directory; every other placeholder is
//! the shared routing [`Template`]'s. Names are built only from source
//! positions, never from the clock, so a replay writes the same name.
//! This module never touches storage.

use chrono::{TimeZone, Utc};
use std::sync::Arc;

use deltaforge_core::{Event, Op, Position};
use deltaforge_encoding::template::TemplateError;
use deltaforge_encoding::Template;

/// Stand-ins for `${date}` / `${hour}` while the shared template parses the
/// rest (characters a template never holds).
const DATE_MARK: &str = "\u{1}D\u{1}";
const HOUR_MARK: &str = "\u{1}H\u{1}";

/// A parsed `path` template.
#[derive(Debug, Clone)]
pub struct PathTemplate {
    template: Template,
    uses_time: bool,
    /// Whether the directory depends on row values (`${after.…}`).
    uses_rows: bool,
}

/// The last directory [`PathTemplate::render_cached`] made, and what it
/// was made from.
#[derive(Debug, Default)]
pub struct DirCache {
    key: Option<DirKey>,
    dir: Arc<str>,
}

/// What a directory without row placeholders depends on: db, table,
/// tenant, pipeline, op and the commit hour.
type DirKey = (Arc<str>, Arc<str>, Arc<str>, Arc<str>, Op, i64);

impl PathTemplate {
    /// Parses a template; unknown placeholders and `..` segments are errors.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        if text.split('/').any(|s| s == ".." || s == ".") {
            return Err(TemplateError(format!("{text:?} holds a `.` or `..` segment; name directories plainly")));
        }
        if text.starts_with('/') {
            return Err(TemplateError(format!("{text:?} starts with `/`; it is relative to the url")));
        }
        let uses_time = text.contains("${date}") || text.contains("${hour}");
        let marked = text.replace("${date}", DATE_MARK).replace("${hour}", HOUR_MARK);
        let template = Template::parse(&marked).map_err(|e| {
            TemplateError(
                e.0.replace(DATE_MARK, "${date}")
                    .replace(HOUR_MARK, "${hour}")
                    .replace("known: ${db}", "known: ${date}, ${hour}, ${db}"),
            )
        })?;
        let uses_rows = text.contains("${after.") || text.contains("${before.");
        Ok(PathTemplate { template, uses_time, uses_rows })
    }

    /// [`render`](Self::render), reusing the last directory while the
    /// event's db, table, op, tenant, pipeline and commit hour are the same
    /// (rendering allocates and formats dates: too slow for every event).
    pub fn render_cached(&self, e: &Event, cache: &mut DirCache) -> Arc<str> {
        if self.uses_rows {
            return self.render(e).into();
        }
        let hour = if self.uses_time { e.source.ts_ms.div_euclid(3_600_000) } else { 0 };
        let s = &e.source;
        if let Some((db, table, tenant, pipeline, op, h)) = &cache.key {
            if *h == hour
                && *op == e.op
                && *db == s.db
                && *table == s.table
                && *tenant == s.tenant
                && *pipeline == s.pipeline
            {
                return cache.dir.clone();
            }
        }
        cache.dir = self.render(e).into();
        cache.key = Some((s.db.clone(), s.table.clone(), s.tenant.clone(), s.pipeline.clone(), e.op, hour));
        cache.dir.clone()
    }

    /// The directory of an event's file, relative to the URL, without
    /// leading or trailing `/`; characters unsafe in object keys become `_`.
    pub fn render(&self, e: &Event) -> String {
        let mut out = self.template.render(e);
        if self.uses_time {
            let t = Utc.timestamp_millis_opt(e.source.ts_ms).single().unwrap_or_default();
            out = out
                .replace(DATE_MARK, &t.format("%Y-%m-%d").to_string())
                .replace(HOUR_MARK, &t.format("%H").to_string());
        }
        let cleaned: String =
            out.chars().map(|c| if c.is_ascii_alphanumeric() || "=-_./".contains(c) { c } else { '_' }).collect();
        cleaned.split('/').filter(|s| !s.is_empty() && *s != "." && *s != "..").collect::<Vec<_>>().join("/")
    }
}

/// The position text of one event in a file name: its transaction's
/// position key and its index, with characters unsafe in names replaced
/// (`0/1A2B3C4D` index 3 → `0-1A2B3C4D.3`).
pub fn position_text(tx: &Position, index: u32) -> String {
    let mut key = String::new();
    tx.write_key(&mut key);
    let mut out: String =
        key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    out.push('.');
    out.push_str(&index.to_string());
    out
}

/// The file name of the events from `first` to `last`: `{first}_{last}.{ext}`.
pub fn file_name(first: &str, last: &str, extension: &str) -> String {
    format!("{first}_{last}.{extension}")
}

/// The manifest key of a committed file: `_manifest/{dir}/{file}.json`.
pub fn manifest_key(dir: &str, file: &str) -> String {
    if dir.is_empty() {
        format!("_manifest/{file}.json")
    } else {
        format!("_manifest/{dir}/{file}.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltaforge_core::testing::EventBuilder;

    #[test]
    fn renders_date_hour_and_the_routing_placeholders() {
        let mut e = EventBuilder::new(7).table("shop.orders").build();
        e.source.ts_ms = 1_709_214_300_000; // 2024-02-29T13:45:00Z
        let t = PathTemplate::parse("${db}/${table}/date=${date}/hour=${hour}").unwrap();
        assert_eq!(t.render(&e), "shop/orders/date=2024-02-29/hour=13");
        let t = PathTemplate::parse("${table}/op=${op}").unwrap();
        assert_eq!(t.render(&e), "orders/op=c");
        assert_eq!(PathTemplate::parse("").unwrap().render(&e), "");
    }

    #[test]
    fn the_cached_directory_follows_table_op_and_hour() {
        let t = PathTemplate::parse("${table}/${op}/date=${date}/hour=${hour}").unwrap();
        let mut cache = DirCache::default();
        let mut e = EventBuilder::new(7).table("shop.orders").build();
        e.source.ts_ms = 1_709_214_300_000; // 2024-02-29T13:45:00Z
        assert_eq!(&*t.render_cached(&e, &mut cache), "orders/c/date=2024-02-29/hour=13");
        e.source.ts_ms += 14 * 60_000; // 13:59
        assert_eq!(&*t.render_cached(&e, &mut cache), "orders/c/date=2024-02-29/hour=13");
        e.source.ts_ms += 60_000; // 14:00
        assert_eq!(&*t.render_cached(&e, &mut cache), "orders/c/date=2024-02-29/hour=14");
        let mut d = EventBuilder::new(8).table("shop.items").op(Op::Delete).build();
        d.source.ts_ms = e.source.ts_ms;
        assert_eq!(&*t.render_cached(&d, &mut cache), "items/d/date=2024-02-29/hour=14");
        let by_row = PathTemplate::parse("${after.region}").unwrap();
        let r = EventBuilder::new(9).after(serde_json::json!({"region": "eu"})).build();
        assert_eq!(&*by_row.render_cached(&r, &mut cache), "eu");
    }

    #[test]
    fn rejects_unknown_placeholders_and_escapes() {
        let err = PathTemplate::parse("${nope}/x").unwrap_err();
        assert!(err.0.contains("${nope}") && err.0.contains("${date}"), "{err}");
        assert!(PathTemplate::parse("../up").is_err());
        assert!(PathTemplate::parse("/abs").is_err());
    }

    #[test]
    fn names_come_from_positions() {
        let e = EventBuilder::new(42).index(3).build();
        assert_eq!(position_text(&e.tx_position, e.index), "42.3");
        assert_eq!(file_name("1.0", "42.3", "parquet"), "1.0_42.3.parquet");
        assert_eq!(
            manifest_key("orders/date=2024-02-29", "a.parquet"),
            "_manifest/orders/date=2024-02-29/a.parquet.json"
        );
        assert_eq!(manifest_key("", "a.parquet"), "_manifest/a.parquet.json");
    }
}

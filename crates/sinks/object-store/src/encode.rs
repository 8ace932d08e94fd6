//! Encoding one file: rows go straight into a local temporary file
//! (Parquet via `parquet`'s `ArrowWriter`, or JSON Lines, optionally
//! gzip or zstd), so memory stays bounded by one row group however large the file.
//!
//! Owns the byte format only: it never names, uploads or commits a file.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use deltaforge_core::{Columns, Event, Op, Row};
use deltaforge_encoding::Envelope;
use flate2::write::GzEncoder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression as ParquetCompression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use tempfile::NamedTempFile;

use crate::columns::{Cell, ColumnBuilder};
use crate::config::Compression;
use crate::layout::{Layout, BEFORE_PREFIX, META_COLUMNS};

/// Rows gathered into one Arrow batch before the Parquet writer takes them.
const ARROW_BATCH_ROWS: usize = 8192;
/// zstd level of JSON Lines files: zstd's default, a good speed/size balance.
const ZSTD_LEVEL: i32 = 3;
/// Rows per Parquet row group: bounds the writer's memory (a row group is
/// encoded in memory before it is written out).
const ROW_GROUP_ROWS: usize = 65_536;

/// Why an event could not be appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendError {
    /// A value its column cannot hold exactly: the event's own fault,
    /// with a message naming the table, the column and why. Nothing of the
    /// event was appended.
    Unfit(String),
    /// Writing failed (I/O, the Parquet writer).
    Failed(String),
}

/// A file being written.
pub enum FileEncoder {
    /// Parquet.
    Parquet(Box<ParquetEncoder>),
    /// JSON Lines.
    Jsonl(Box<JsonlEncoder>),
}

impl FileEncoder {
    /// Appends one event whole, or nothing of it; returns the file's size
    /// so far (Parquet: bytes written plus the row group in progress, as of
    /// the last full Arrow batch; JSON Lines: uncompressed bytes). It
    /// depends only on the rows appended, so files roll over at the same
    /// event on replay.
    pub fn append(&mut self, e: &Event) -> Result<u64, AppendError> {
        match self {
            FileEncoder::Parquet(p) => p.append(e).map(|_| p.size),
            FileEncoder::Jsonl(j) => j.append(e).map(|_| j.bytes).map_err(AppendError::Failed),
        }
    }

    /// Finishes the file, fsyncs it and hands back the temporary file.
    pub fn finish(self) -> Result<NamedTempFile, String> {
        match self {
            FileEncoder::Parquet(p) => (*p).finish(),
            FileEncoder::Jsonl(j) => (*j).finish(),
        }
    }
}

/// Where a layout's columns are in rows of one column list, remembered
/// for the last list seen (events of a table share one list).
#[derive(Default)]
struct ColumnMap {
    of: Option<Columns>,
    index: Vec<Option<usize>>,
}

impl ColumnMap {
    fn indices(&mut self, layout: &Layout, row: &Row) -> &[Option<usize>] {
        if !self.of.as_ref().is_some_and(|c| Arc::ptr_eq(c, row.columns())) {
            let names = row.columns();
            self.index = layout.columns.iter().map(|(n, _)| names.iter().position(|c| **c == **n)).collect();
            self.of = Some(names.clone());
        }
        &self.index
    }
}

/// The value at `at` of a row image, if both exist.
fn value(image: Option<&Row>, at: Option<usize>) -> Option<&serde_json::Value> {
    image.zip(at).map(|(r, i)| &r.values()[i])
}

/// Parquet rows in the flat layout (see [`crate::layout`]).
pub struct ParquetEncoder {
    schema: SchemaRef,
    columns: Vec<ColumnBuilder>,
    layout: Arc<Layout>,
    include_before: bool,
    rows: usize,
    /// Size as of the last Arrow batch written.
    size: u64,
    writer: ArrowWriter<NamedTempFile>,
    /// Reused per event: converted values, column positions, the id text.
    cells: Vec<Cell>,
    maps: [ColumnMap; 2],
    id: String,
}

impl ParquetEncoder {
    /// A Parquet file of `layout` rows in `tmp`.
    pub fn new(tmp: NamedTempFile, layout: Arc<Layout>, include_before: bool) -> Result<Self, String> {
        let schema: SchemaRef = Arc::new(layout.arrow_schema(include_before));
        let columns = schema.fields().iter().map(|f| ColumnBuilder::new(f.data_type())).collect();
        let props = WriterProperties::builder()
            .set_compression(ParquetCompression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            // `__id` is unique per row: a dictionary for it is pure cost
            // (the largest item of the writer's profile).
            .set_column_dictionary_enabled(ColumnPath::from(META_COLUMNS[0]), false)
            .set_created_by("deltaforge".into())
            .build();
        let writer = ArrowWriter::try_new(tmp, schema.clone(), Some(props))
            .map_err(|e| format!("starting a Parquet file: {e}"))?;
        Ok(ParquetEncoder {
            schema,
            columns,
            layout,
            include_before,
            rows: 0,
            size: 0,
            writer,
            cells: Vec::new(),
            maps: Default::default(),
            id: String::with_capacity(64),
        })
    }

    fn append(&mut self, e: &Event) -> Result<(), AppendError> {
        // Deletes carry their before image (at least the key) in the row.
        let row = match e.op {
            Op::Delete => e.before.as_ref(),
            _ => e.after.as_ref().or(e.before.as_ref()),
        };
        let images = [row, e.before.as_ref()];
        let images = &images[..if self.include_before { 2 } else { 1 }];
        let Self { columns, layout, cells, maps, .. } = self;
        let table_columns = &mut columns[META_COLUMNS.len()..];
        let width = layout.columns.len();
        // Every value is checked before any is appended: a row goes in whole.
        cells.clear();
        for (k, image) in images.iter().enumerate() {
            let at = image.map(|r| maps[k].indices(layout, r));
            for (c, (name, _)) in layout.columns.iter().enumerate() {
                let v = value(*image, at.and_then(|a| a[c]));
                match table_columns[k * width + c].convert(v) {
                    Ok(cell) => cells.push(cell),
                    Err(why) => {
                        let prefix = if k == 0 { "" } else { BEFORE_PREFIX };
                        return Err(AppendError::Unfit(format!(
                            "{}.{} column {prefix}{name}: {why}",
                            e.source.db, e.source.table
                        )));
                    }
                }
            }
        }
        let mut cells = cells.drain(..);
        for (k, image) in images.iter().enumerate() {
            let at = image.map(|r| maps[k].indices(layout, r));
            for c in 0..width {
                let cell = cells.next().expect("one cell per column");
                table_columns[k * width + c].push(cell, value(*image, at.and_then(|a| a[c])));
            }
        }
        drop(cells);
        if let [ColumnBuilder::Text(id), ColumnBuilder::Text(op), ColumnBuilder::I64(ts), ..] = &mut columns[..] {
            self.id.clear();
            self.id.push_str(&e.source.source_id);
            self.id.push(':');
            e.tx_position.write_key(&mut self.id);
            let _ = write!(self.id, ":{}", e.index);
            id.append_value(&self.id);
            op.append_value(e.op.code());
            ts.append_value(e.source.ts_ms);
        }
        self.rows += 1;
        if self.rows >= ARROW_BATCH_ROWS {
            self.write_batch().map_err(AppendError::Failed)?;
        }
        Ok(())
    }

    fn write_batch(&mut self) -> Result<(), String> {
        if self.rows == 0 {
            return Ok(());
        }
        let arrays = self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| format!("building rows: {e}"))?;
        self.writer.write(&batch).map_err(|e| format!("writing Parquet rows: {e}"))?;
        self.rows = 0;
        self.size = (self.writer.bytes_written() + self.writer.in_progress_size()) as u64;
        Ok(())
    }

    fn finish(mut self) -> Result<NamedTempFile, String> {
        self.write_batch()?;
        let tmp = self.writer.into_inner().map_err(|e| format!("finishing a Parquet file: {e}"))?;
        tmp.as_file().sync_all().map_err(|e| format!("fsync of a Parquet file: {e}"))?;
        Ok(tmp)
    }
}

/// JSON Lines, one envelope per line.
pub struct JsonlEncoder {
    envelope: Envelope,
    out: JsonlOut,
    line: Vec<u8>,
    bytes: u64,
}

enum JsonlOut {
    Plain(BufWriter<NamedTempFile>),
    Gzip(GzEncoder<BufWriter<NamedTempFile>>),
    Zstd(zstd::stream::write::Encoder<'static, BufWriter<NamedTempFile>>),
}

impl JsonlEncoder {
    /// A JSON Lines file in `tmp`.
    pub fn new(tmp: NamedTempFile, envelope: Envelope, compression: Compression) -> Result<Self, String> {
        let buf = BufWriter::with_capacity(256 * 1024, tmp);
        let out = match compression {
            Compression::None => JsonlOut::Plain(buf),
            Compression::Gzip => JsonlOut::Gzip(GzEncoder::new(buf, flate2::Compression::fast())),
            Compression::Zstd => JsonlOut::Zstd(
                zstd::stream::write::Encoder::new(buf, ZSTD_LEVEL).map_err(|e| format!("starting zstd: {e}"))?,
            ),
        };
        Ok(JsonlEncoder { envelope, out, line: Vec::with_capacity(1024), bytes: 0 })
    }

    fn append(&mut self, e: &Event) -> Result<(), String> {
        self.line.clear();
        self.envelope.encode_into(e, &mut self.line);
        self.line.push(b'\n');
        self.bytes += self.line.len() as u64;
        let w: &mut dyn Write = match &mut self.out {
            JsonlOut::Plain(w) => w,
            JsonlOut::Gzip(w) => w,
            JsonlOut::Zstd(w) => w,
        };
        w.write_all(&self.line).map_err(|e| format!("writing a JSON Lines file: {e}"))
    }

    fn finish(self) -> Result<NamedTempFile, String> {
        let buf = match self.out {
            JsonlOut::Plain(w) => w,
            JsonlOut::Gzip(w) => w.finish().map_err(|e| format!("finishing gzip: {e}"))?,
            JsonlOut::Zstd(w) => w.finish().map_err(|e| format!("finishing zstd: {e}"))?,
        };
        let tmp = buf.into_inner().map_err(|e| format!("writing a JSON Lines file: {}", e.error()))?;
        tmp.as_file().sync_all().map_err(|e| format!("fsync of a JSON Lines file: {e}"))?;
        Ok(tmp)
    }
}

/// The size of a finished temporary file.
pub fn file_size(f: &File) -> u64 {
    f.metadata().map(|m| m.len()).unwrap_or(0)
}

//! One part file of the dataset: `DIR/TABLE/node=NODE/part-START.parquet`,
//! written beside its name under a temporary one and renamed into place
//! when complete (as every tal output: `crate::convert::PendingOutput`),
//! so an engine listing the folder never reads half a file. A log's six
//! parts are renamed only once all six are complete ([`Part::close`], then
//! [`Closed::commit`]): a full disk leaves the node's earlier parts, not
//! a mix of new and old tables.
//!
//! The folders under DIR are made by tal. One that exists already must be
//! a real folder of this user's: a symbolic link or someone else's folder
//! planted in a shared DIR is refused, so a part is never written where
//! the user did not ask; so is anything at a part's name that is not a
//! regular file (a FIFO, a link to a device).
//!
//! Encodings: times delta-encoded; event ids with their lengths apart from
//! their text (a dictionary of random ids would only grow; with the
//! lengths apart, zstd brings the 32 hex digits to the 16 bytes of the id,
//! which is most of a sample's size); everything else dictionary-encoded while
//! that pays (percentages have at most 1,001 values) and byte-stream-split
//! floats after; pages zstd-compressed; row groups of [`ROW_GROUP_ROWS`].

use crate::convert::PendingOutput;
use arrow_array::RecordBatch;
use arrow_schema::{DataType, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Rows of a row group, at most: large enough for engines to read fast,
/// small enough to keep a writer's memory to a few MiB per table.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Encoded bytes of a row group, at most (the writer holds a row group in
/// memory until it is whole): rows of long strings make smaller groups.
pub const ROW_GROUP_BYTES: usize = 32 << 20;

/// The zstd level: 3 is zstd's own default, and most of its ratio on
/// these columns at a fraction of the higher levels' time.
const ZSTD_LEVEL: i32 = 3;

/// The temporary file a part is written to, as a `Write` the Parquet
/// writer can own.
struct Pending(PendingOutput);

impl Write for Pending {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.writer.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.writer.flush()
    }
}

/// A part file being written.
pub struct Part {
    writer: ArrowWriter<Pending>,
    path: PathBuf,
}

/// A part file written whole under its temporary name, to be renamed.
#[derive(Debug)]
pub struct Closed {
    out: PendingOutput,
    path: PathBuf,
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Part").field("path", &self.path).finish()
    }
}

/// A Parquet error as an I/O error, saying which file.
pub fn parquet_error(path: &Path, e: parquet::errors::ParquetError) -> io::Error {
    match e {
        parquet::errors::ParquetError::External(inner) => match inner.downcast::<io::Error>() {
            Ok(io) => io::Error::new(io.kind(), format!("{}: {io}", path.display())),
            Err(other) => io::Error::other(format!("{}: {other}", path.display())),
        },
        e => io::Error::other(format!("{}: {e}", path.display())),
    }
}

/// The longest folder name of a node, bytes (a file name has 255).
pub const MAX_FOLDER_BYTES: usize = 200;

/// The folder name of `node` in a table: `node=` and the id, with every
/// byte but `[A-Za-z0-9._-]` percent-encoded, as Hive-style readers
/// (pyarrow, DuckDB, Spark) decode it. An id whose encoding would pass
/// [`MAX_FOLDER_BYTES`] (a valid id of 200 bytes may triple) keeps its
/// first encoded bytes and ends with `~` and 16 hex digits of its hash:
/// the folder's `node` is then not the id, which every row's `node_id`
/// holds.
pub fn node_folder(node: &str) -> String {
    let mut s = String::from("node=");
    for b in node.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    if s.len() > MAX_FOLDER_BYTES {
        let mut cut = MAX_FOLDER_BYTES - 17;
        // Not inside a %XX.
        while s.as_bytes()[cut - 1] == b'%' || s.as_bytes()[cut - 2] == b'%' {
            cut -= 1;
        }
        s.truncate(cut);
        let h = xxhash_rust::xxh3::xxh3_64(node.as_bytes());
        s.push_str(&format!("~{h:016x}"));
    }
    s
}

/// Makes `dir` if it is not there; if it is, it must be a folder of this
/// user's, not a link (see the module doc).
pub fn own_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o777).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot make the folder {}: {e}", dir.display()),
            ))
        }
    }
    let m = std::fs::symlink_metadata(dir)?;
    let me = rustix::process::geteuid().as_raw();
    if !m.file_type().is_dir() || m.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} is not a folder of this user's (a link, a file or another user's folder): \
                 not writing a dataset into it; remove it or choose another output folder",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// The writer's settings for `schema`.
fn properties(schema: &SchemaRef, meta: Vec<KeyValue>) -> WriterProperties {
    let zstd = ZstdLevel::try_new(ZSTD_LEVEL).expect("a valid zstd level");
    let mut p = WriterProperties::builder()
        .set_compression(Compression::ZSTD(zstd))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .set_key_value_metadata(Some(meta))
        .set_created_by(format!("tal {}", env!("CARGO_PKG_VERSION")));
    for f in schema.fields() {
        let col = ColumnPath::from(f.name().as_str());
        p = match f.data_type() {
            DataType::Timestamp(..) => p
                .set_column_dictionary_enabled(col.clone(), false)
                .set_column_encoding(col, Encoding::DELTA_BINARY_PACKED),
            DataType::Float64 => p.set_column_encoding(col, Encoding::BYTE_STREAM_SPLIT),
            _ if f.name() == "event_id" => p
                .set_column_dictionary_enabled(col.clone(), false)
                .set_column_encoding(col, Encoding::DELTA_LENGTH_BYTE_ARRAY),
            _ => p,
        };
    }
    p.build()
}

impl Part {
    /// Starts `dir/table/node=NODE/part-K.parquet` (the folders made as
    /// needed), with `meta` in the file's key-value metadata; `k` is the
    /// log's start, ns since the epoch (see `super`).
    pub fn create(
        dir: &Path,
        table: &str,
        node: &str,
        k: i64,
        schema: &SchemaRef,
        meta: Vec<KeyValue>,
    ) -> io::Result<Self> {
        let table_dir = dir.join(table);
        own_dir(&table_dir)?;
        let node_dir = table_dir.join(node_folder(node));
        own_dir(&node_dir)?;
        let path = node_dir.join(format!("part-{k}.parquet"));
        if let Ok(m) = std::fs::symlink_metadata(&path) {
            if !m.file_type().is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} is there and is not a regular file (a folder, a link, a FIFO): \
                         not replacing it; remove it or choose another output folder",
                        path.display()
                    ),
                ));
            }
        }
        let out = PendingOutput::create(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let writer =
            ArrowWriter::try_new(Pending(out), schema.clone(), Some(properties(schema, meta)))
                .map_err(|e| parquet_error(&path, e))?;
        Ok(Self { writer, path })
    }

    /// Appends a batch of rows.
    pub fn write(&mut self, batch: &RecordBatch) -> io::Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.writer
            .write(batch)
            .map_err(|e| parquet_error(&self.path, e))
    }

    /// Writes the footer, under the temporary name.
    pub fn close(self) -> io::Result<Closed> {
        let Self { writer, path } = self;
        let Pending(mut out) = writer.into_inner().map_err(|e| parquet_error(&path, e))?;
        out.writer
            .flush()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(Closed { out, path })
    }
}

impl Closed {
    /// Moves the file to its name; its size.
    pub fn commit(self) -> io::Result<u64> {
        let Self { out, path } = self;
        out.commit()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(std::fs::metadata(&path).map_or(0, |m| m.len()))
    }
}

//! Arrow columns built row by row: each table of the dataset is a fixed
//! list of named, typed columns ([`Spec`]), appended one row at a time in
//! that order ([`Row`]) and cut into record batches of at most
//! [`BATCH_ROWS`] rows.
//!
//! The types are the ones engines read without surprise: 64-bit integers
//! and floats (what a JSON number reads as in pandas, DuckDB and polars),
//! UTF-8 strings, booleans, timestamps in ns with the UTC zone, a list of
//! 32-bit floats (per-core CPU, as the log keeps it), and string-keyed maps.

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder, Int64Builder, ListBuilder,
    MapBuilder, StringBuilder, TimestampNanosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::sync::Arc;

/// Rows of one record batch, at most: the writer's row groups are a whole
/// number of batches (see `super::part`).
pub const BATCH_ROWS: usize = 16_384;

/// Bytes of strings and bytes in one record batch, about, at most: a log's
/// records may each carry up to 64 MiB of attributes (a crafted log, a
/// client's long strings), so a batch is cut by its bytes too, and a
/// table's memory stays a few MiB whatever the rows hold.
pub const BATCH_BYTES: usize = 8 << 20;

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A time: ns since the epoch, UTC.
    Time,
    /// A 64-bit float.
    F64,
    /// A 64-bit integer.
    I64,
    /// A UTF-8 string.
    Str,
    /// A boolean.
    Bool,
    /// Bytes.
    Bin,
    /// A list of 32-bit floats.
    F32List,
    /// A map of string keys to strings.
    StrMap,
    /// A map of string keys to 64-bit integers.
    I64Map,
    /// A map of string keys to 64-bit floats.
    F64Map,
}

/// A column: its name, type and whether it may be null.
pub type Spec = (&'static str, Kind, bool);

fn utc() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn map_type(value: DataType) -> DataType {
    // As arrow's MapBuilder names them, so that built arrays match.
    let entries = Field::new(
        "entries",
        DataType::Struct(
            vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", value, true),
            ]
            .into(),
        ),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

/// The Arrow schema of `specs`.
pub fn schema(specs: &[Spec]) -> SchemaRef {
    let fields: Vec<Field> = specs
        .iter()
        .map(|&(name, kind, nullable)| {
            let t = match kind {
                Kind::Time => utc(),
                Kind::F64 => DataType::Float64,
                Kind::I64 => DataType::Int64,
                Kind::Str => DataType::Utf8,
                Kind::Bool => DataType::Boolean,
                Kind::Bin => DataType::Binary,
                Kind::F32List => {
                    DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true)))
                }
                Kind::StrMap => map_type(DataType::Utf8),
                Kind::I64Map => map_type(DataType::Int64),
                Kind::F64Map => map_type(DataType::Float64),
            };
            Field::new(name, t, nullable)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// One column's builder.
enum Col {
    Time(TimestampNanosecondBuilder),
    F64(Float64Builder),
    I64(Int64Builder),
    Str(StringBuilder),
    Bool(BooleanBuilder),
    Bin(BinaryBuilder),
    F32List(ListBuilder<Float32Builder>),
    StrMap(MapBuilder<StringBuilder, StringBuilder>),
    I64Map(MapBuilder<StringBuilder, Int64Builder>),
    F64Map(MapBuilder<StringBuilder, Float64Builder>),
}

impl Col {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Time => Col::Time(TimestampNanosecondBuilder::new().with_timezone("UTC")),
            Kind::F64 => Col::F64(Float64Builder::new()),
            Kind::I64 => Col::I64(Int64Builder::new()),
            Kind::Str => Col::Str(StringBuilder::new()),
            Kind::Bool => Col::Bool(BooleanBuilder::new()),
            Kind::Bin => Col::Bin(BinaryBuilder::new()),
            Kind::F32List => Col::F32List(ListBuilder::new(Float32Builder::new())),
            Kind::StrMap => Col::StrMap(MapBuilder::new(
                None,
                StringBuilder::new(),
                StringBuilder::new(),
            )),
            Kind::I64Map => Col::I64Map(MapBuilder::new(
                None,
                StringBuilder::new(),
                Int64Builder::new(),
            )),
            Kind::F64Map => Col::F64Map(MapBuilder::new(
                None,
                StringBuilder::new(),
                Float64Builder::new(),
            )),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Time(b) => Arc::new(b.finish()),
            Col::F64(b) => Arc::new(b.finish()),
            Col::I64(b) => Arc::new(b.finish()),
            Col::Str(b) => Arc::new(b.finish()),
            Col::Bool(b) => Arc::new(b.finish()),
            Col::Bin(b) => Arc::new(b.finish()),
            Col::F32List(b) => Arc::new(b.finish()),
            Col::StrMap(b) => Arc::new(b.finish()),
            Col::I64Map(b) => Arc::new(b.finish()),
            Col::F64Map(b) => Arc::new(b.finish()),
        }
    }
}

/// A table's columns being built.
pub struct Table {
    schema: SchemaRef,
    specs: &'static [Spec],
    cols: Vec<Col>,
    rows: usize,
    bytes: usize,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("rows", &self.rows).finish()
    }
}

impl Table {
    /// An empty table of `specs`.
    pub fn new(specs: &'static [Spec]) -> Self {
        Self {
            schema: schema(specs),
            specs,
            cols: specs.iter().map(|s| Col::new(s.1)).collect(),
            rows: 0,
            bytes: 0,
        }
    }

    /// Its schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows appended since the last batch.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Whether the rows appended since the last batch make a whole batch
    /// ([`BATCH_ROWS`] rows or [`BATCH_BYTES`] of text).
    pub fn full(&self) -> bool {
        self.rows >= BATCH_ROWS || self.bytes >= BATCH_BYTES
    }

    /// Starts a row: append every column, in order, then [`Row::end`].
    pub fn row(&mut self) -> Row<'_> {
        Row { t: self, at: 0 }
    }

    /// The rows appended since the last batch, as one batch.
    pub fn batch(&mut self) -> RecordBatch {
        let arrays: Vec<ArrayRef> = self.cols.iter_mut().map(Col::finish).collect();
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(self.schema.clone(), arrays)
            .expect("every column has a value in every row, of its spec's type")
    }
}

/// One row being appended (see [`Table::row`]). A value of the wrong type
/// for its column is a bug, and panics.
pub struct Row<'a> {
    t: &'a mut Table,
    at: usize,
}

impl std::fmt::Debug for Row<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Row").field("at", &self.at).finish()
    }
}

impl Row<'_> {
    fn next(&mut self) -> &mut Col {
        let c = &mut self.t.cols[self.at];
        self.at += 1;
        c
    }

    fn mismatch(&self, what: &str) -> ! {
        let (name, kind, _) = self.t.specs[self.at - 1];
        panic!("column {name} is {kind:?}, given {what}")
    }

    /// A time, ns since the epoch.
    pub fn time(&mut self, ns: Option<i64>) -> &mut Self {
        match self.next() {
            Col::Time(b) => b.append_option(ns),
            _ => self.mismatch("a time"),
        }
        self
    }

    /// A float; one that is not finite is a null, as the JSONL writes it.
    pub fn f64(&mut self, v: Option<f64>) -> &mut Self {
        match self.next() {
            Col::F64(b) => b.append_option(v.filter(|v| v.is_finite())),
            _ => self.mismatch("a float"),
        }
        self
    }

    /// An integer.
    pub fn i64(&mut self, v: Option<i64>) -> &mut Self {
        match self.next() {
            Col::I64(b) => b.append_option(v),
            _ => self.mismatch("an integer"),
        }
        self
    }

    /// A string.
    pub fn str(&mut self, v: Option<&str>) -> &mut Self {
        self.t.bytes += v.map_or(0, str::len);
        match self.next() {
            Col::Str(b) => b.append_option(v),
            _ => self.mismatch("a string"),
        }
        self
    }

    /// A boolean.
    pub fn bool(&mut self, v: Option<bool>) -> &mut Self {
        match self.next() {
            Col::Bool(b) => b.append_option(v),
            _ => self.mismatch("a boolean"),
        }
        self
    }

    /// Bytes.
    pub fn bin(&mut self, v: Option<&[u8]>) -> &mut Self {
        self.t.bytes += v.map_or(0, <[u8]>::len);
        match self.next() {
            Col::Bin(b) => b.append_option(v),
            _ => self.mismatch("bytes"),
        }
        self
    }

    /// A list of floats (null when `None`; an element that is not finite
    /// is a null, as the JSONL writes it).
    pub fn f32_list(&mut self, v: Option<&[f32]>) -> &mut Self {
        self.t.bytes += v.map_or(0, |vs| vs.len() * 4);
        match self.next() {
            Col::F32List(b) => match v {
                Some(vs) if vs.iter().all(|x| x.is_finite()) => {
                    b.values().append_slice(vs);
                    b.append(true);
                }
                Some(vs) => {
                    for x in vs {
                        b.values().append_option(Some(*x).filter(|x| x.is_finite()));
                    }
                    b.append(true);
                }
                None => b.append(false),
            },
            _ => self.mismatch("a list"),
        }
        self
    }

    /// A map of strings (null when `None`).
    pub fn str_map<'k>(
        &mut self,
        v: Option<impl IntoIterator<Item = (&'k str, Option<&'k str>)>>,
    ) -> &mut Self {
        let present = v.is_some();
        let mut bytes = 0;
        match self.next() {
            Col::StrMap(b) => {
                for (k, val) in v.into_iter().flatten() {
                    bytes += k.len() + val.map_or(0, str::len);
                    b.keys().append_value(k);
                    b.values().append_option(val);
                }
                b.append(present).expect("keys and values match");
            }
            _ => self.mismatch("a map of strings"),
        }
        self.t.bytes += bytes;
        self
    }

    /// A map of integers (null when `None`).
    pub fn i64_map<'k>(
        &mut self,
        v: Option<impl IntoIterator<Item = (&'k str, Option<i64>)>>,
    ) -> &mut Self {
        let present = v.is_some();
        let mut bytes = 0;
        match self.next() {
            Col::I64Map(b) => {
                for (k, val) in v.into_iter().flatten() {
                    bytes += k.len() + 8;
                    b.keys().append_value(k);
                    b.values().append_option(val);
                }
                b.append(present).expect("keys and values match");
            }
            _ => self.mismatch("a map of integers"),
        }
        self.t.bytes += bytes;
        self
    }

    /// A map of floats (null when `None`).
    pub fn f64_map<'k>(
        &mut self,
        v: Option<impl IntoIterator<Item = (&'k str, Option<f64>)>>,
    ) -> &mut Self {
        let present = v.is_some();
        let mut bytes = 0;
        match self.next() {
            Col::F64Map(b) => {
                for (k, val) in v.into_iter().flatten() {
                    bytes += k.len() + 8;
                    b.keys().append_value(k);
                    b.values().append_option(val.filter(|v| v.is_finite()));
                }
                b.append(present).expect("keys and values match");
            }
            _ => self.mismatch("a map of floats"),
        }
        self.t.bytes += bytes;
        self
    }

    /// Ends the row; every column must have had its value.
    pub fn end(&mut self) {
        assert_eq!(self.at, self.t.cols.len(), "a row of {} columns", self.at);
        self.t.rows += 1;
    }
}

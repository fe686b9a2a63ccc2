//! tal: records an HPC workflow run — the session, every task's lifecycle,
//! and each node's resources — into a crash-safe binary log, and converts it
//! to RHAPSODY's JSONL checkpoint and to OpenTelemetry.
//!
//! The modules follow the pipeline (docs/design.md is its map):
//! [`agent`] (the /proc and GPU sampling threads) and [`ingest`] (the
//! socket's clients) each hand data through a [`ring`] to [`dispatch`],
//! which turns it into [`record`]s and, in the same wake-up, appends them to
//! the [`log`] (the writer stage runs on the dispatcher's thread: no ring
//! between them), feeds live subscribers (through a ring back to the
//! listener) and the live OTLP exporter ([`otlp_live`]). [`convert`] reads
//! logs back into JSONL and OTLP, with [`tasks`] and [`instruments`]
//! deciding spans and counters; [`event_json`] writes each event and span
//! as its JSONL line (with [`json`]) for both the converter and the live
//! feeds, so neither imports the other; [`otlp`] maps those lines to
//! OpenTelemetry for both too. [`recorder`] wires `tal record` together,
//! [`run`] is `tal run`, [`commands`] the other subcommands, and [`cli`]
//! the command line. Arrows point one way: the CLI above the stages, the
//! stages above the data model ([`record`], [`clock`], [`ids`]).
#![deny(unsafe_code)]
#![warn(missing_debug_implementations, unreachable_pub)]

pub mod agent;
pub mod cli;
pub mod client;
pub mod clock;
pub mod commands;
pub mod convert;
pub mod dataset;
pub mod dispatch;
pub mod event_json;
pub mod ids;
pub mod ingest;
pub mod instruments;
pub mod items;
pub mod json;
pub mod log;
pub mod otlp;
pub mod otlp_http;
pub mod otlp_live;
pub mod progress;
pub mod record;
pub mod recorder;
pub mod report;
pub mod ring;
pub mod run;
pub mod slurm;
pub mod stats;
pub mod summary;
pub mod sys;
pub mod tasks;
pub mod tempfiles;
pub mod term;

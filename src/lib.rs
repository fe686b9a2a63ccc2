//! tal: records an HPC workflow run — the session, every task's lifecycle,
//! and each node's resources — into a crash-safe binary log, and converts it
//! to RHAPSODY's JSONL checkpoint.
//!
//! The modules follow the pipeline (see DESIGN.md):
//! [`agent`] (sampling threads) → [`ring`] → [`dispatch`] → [`ring`] →
//! [`log`] (writer) … [`convert`] (reader → JSONL). [`record`] is the data
//! model they share, [`recorder`] wires `tal record` together and [`cli`]
//! is the command line.
#![deny(unsafe_code)]
#![warn(missing_debug_implementations, unreachable_pub)]

pub mod agent;
pub mod cli;
pub mod client;
pub mod clock;
pub mod convert;
pub mod dispatch;
pub mod ids;
pub mod ingest;
pub mod instruments;
pub mod log;
pub mod otlp_http;
pub mod otlp_live;
pub mod record;
pub mod recorder;
pub mod ring;
pub mod run;
pub mod slurm;
pub mod stats;
pub mod tasks;

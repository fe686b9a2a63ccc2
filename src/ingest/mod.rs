//! Ingest: task lifecycle and custom events from clients — workflow
//! runtimes, `tal run`, `tal emit` — over a Unix stream socket.

pub mod batch;
pub mod fast;
pub mod feed;
pub mod listener;
pub mod protocol;
pub mod reuse;
pub mod sockdir;

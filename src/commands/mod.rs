//! The subcommands that are clients of an agent or of its logs, one module
//! each (`tal record` is [`crate::recorder`], `tal run` [`crate::run`]).
//! Each takes its parsed arguments and returns the exit code; `main` only
//! parses and dispatches.

pub mod convert;
pub mod emit;
pub mod inputs;
pub mod report;
pub mod stop;
pub mod subscribe;
pub mod summary;

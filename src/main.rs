//! The `tal` binary: parses the command line, dispatches to the subcommand
//! (`tal::recorder`, `tal::run`, `tal::commands`), and maps results to exit
//! codes.
//! A real failure prints one line (`tal: ...`) and exits non-zero; a broken
//! pipe on stdout (`tal convert -o - | head`) exits 0.

use std::process::ExitCode;
use tal::cli::{Cli, Command};
use tal::commands;

fn main() -> ExitCode {
    let cli = Cli::parse_or_exit();
    let res = match cli.command {
        Command::Record(args) => args.into_config().and_then(tal::recorder::run),
        Command::Run(args) => args.into_config().and_then(tal::run::run),
        Command::Emit(args) => commands::emit::run(args),
        Command::Stop(args) => commands::stop::stop(args),
        Command::Wait(args) => commands::stop::wait(args),
        Command::Subscribe(args) => commands::subscribe::run(args),
        Command::Convert(args) => commands::convert::run(args),
        Command::Summary(args) => commands::summary::run(args),
        Command::Report(args) => commands::report::run(args),
    };
    match res {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("tal: {e:#}");
            ExitCode::from(2)
        }
    }
}

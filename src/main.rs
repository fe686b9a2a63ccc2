//! The `tal` binary: parses the command line and maps results to exit codes.
//! A real failure prints one line (`tal: ...`) and exits non-zero; a broken
//! pipe on stdout (`tal convert -o - | head`) exits 0.

use clap::Parser;
use std::process::ExitCode;
use tal::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Record(args) => args.into_config().and_then(tal::recorder::run),
        Command::Convert(args) => {
            let output = args.output();
            tal::convert::to_jsonl(&args.logs, &output)
                .map(|(path, summary)| {
                    for l in tal::convert::describe(&summary) {
                        eprintln!("tal convert: {l}");
                    }
                    if let Some(p) = path {
                        eprintln!(
                            "tal convert: wrote {} ({} events, {} log(s))",
                            p.display(),
                            summary.events,
                            summary.logs.len()
                        );
                    }
                    0
                })
                .map_err(|e| match e {
                    tal::convert::ConvertError::Output { source, .. }
                        if source.kind() == std::io::ErrorKind::BrokenPipe =>
                    {
                        anyhow::Error::from(source)
                    }
                    // The typed errors' messages already name their cause.
                    e => anyhow::anyhow!("{e}"),
                })
        }
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

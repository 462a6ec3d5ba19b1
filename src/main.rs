//! The `vantage` binary: parse the command line, hand it to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    vantage::cli::run(vantage::cli::Cli::parse())
}

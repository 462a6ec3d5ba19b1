//! The command line: clap definitions, and `run`, which turns them into calls of the library.
//!
//! Exit codes (documented in the README):
//! - 0: the command ran (warnings may have been printed on stderr);
//! - 1: reserved for `--fail-on` (findings at or above a severity);
//! - 2: an error: a capture could not be read, or the arguments are wrong. Whatever could be
//!   read before the error is still printed.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::pipeline::track_capture;
use crate::report;

const EXAMPLES: &str = "\
Examples:
  vantage flows fixtures/conntrack-reject/agent.pcapng
  vantage flows --format json capture.pcap.gz | jq 'select(.conn_state==\"RSTR\")'
";

#[derive(Parser, Debug)]
#[command(
    name = "vantage",
    version,
    about = "Explain why long-lived TCP and WebSocket connections die, from captures taken at several points of their path",
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the connections in captures, like Zeek's conn.log, with the facts the diagnosis uses
    #[command(after_help = "\
Examples:
  vantage flows agent.pcapng
  vantage flows --format json softswitch.pcap gateway.pcap.gz

JSON lines carry Zeek's conn.log field names (ts, uid, id.orig_h, id.orig_p, id.resp_h,
id.resp_p, proto, duration, orig_bytes, resp_bytes, conn_state, history, orig_pkts, resp_pkts,
...) plus capture, first_frame, last_frame and vantage's own fields; see the README.")]
    Flows(FlowsArgs),
}

#[derive(clap::Args, Debug)]
pub struct FlowsArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = FlowsFormat::Table)]
    pub format: FlowsFormat,
    /// Capture files: pcap or pcapng, optionally gzip-compressed
    #[arg(required = true, value_name = "CAPTURE")]
    pub captures: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FlowsFormat {
    Table,
    Json,
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Flows(args) => flows(args),
    }
}

fn warn(msg: &str) {
    eprintln!("vantage: warning: {msg}");
}

fn flows(args: FlowsArgs) -> ExitCode {
    let mut failed = false;
    let mut all = Vec::new();
    for path in &args.captures {
        match track_capture(path) {
            Ok(flows) => {
                for w in &flows.summary.warnings {
                    warn(&format!("{}: {w}", path.display()));
                }
                if let Some(e) = &flows.error {
                    eprintln!("vantage: error: {e:#}");
                    failed = true;
                }
                all.push(flows);
            }
            Err(e) => {
                eprintln!("vantage: error: {e:#}");
                failed = true;
            }
        }
    }
    let mut conns: Vec<_> = all.iter().flat_map(|f| f.connections.iter()).collect();
    conns.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.first_frame.cmp(&b.first_frame)));
    let out = match args.format {
        FlowsFormat::Table => report::flows_table(&conns, args.captures.len() > 1),
        FlowsFormat::Json => report::flows_json(&conns),
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a message.
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

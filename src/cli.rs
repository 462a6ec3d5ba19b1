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

use crate::pipeline::{read_vantages_filtered, VantageSpec};
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
    /// Colour in progress bars: auto (a terminal, and NO_COLOR unset), always or never
    #[arg(long, global = true, value_enum, default_value_t = crate::progress::ColorChoice::Auto)]
    pub color: crate::progress::ColorChoice,
    /// At the end, print each stage's time and resident memory (then, and its peak) to stderr
    #[arg(long, global = true)]
    pub stats: bool,
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
    /// Explain why connections died: findings with evidence, and a verdict
    #[command(after_help = "\
Examples:
  vantage diagnose agent=agent.pcapng softswitch=softswitch.pcap gateway=gateway.pcap
  vantage diagnose --format markdown -o ticket.md agent=agent.pcapng softswitch=s.pcap
  vantage diagnose --fail-on critical --format json fixtures/conntrack-reject/agent.pcapng

Exit codes: 0 done; 1 a finding at or above --fail-on; 2 an error.")]
    Diagnose(DiagnoseArgs),
    /// Write the packets behind a finding or a connection, from every capture, to one pcapng
    #[command(after_help = "\
Examples:
  vantage extract --finding F1 -o evidence.pcapng agent=a.pcapng softswitch=s.pcap
  vantage extract --conn L3 -o l3.pcapng agent=a.pcapng softswitch=s.pcap gateway=g.pcap

One interface per vantage, named after it; timestamps on the reference clock; each evidence
packet carries a comment saying what it shows (Wireshark: pkt_comment).")]
    Extract(ExtractArgs),
    /// Capture live from an interface to pcapng (libpcap)
    #[cfg(feature = "libpcap")]
    #[command(after_help = "\
Examples:
  vantage capture -i eth0 -f 'tcp port 8080' --duration 60s -w softswitch.pcapng")]
    Capture(CaptureArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout
    Man,
    /// Line up the same connections across captures taken at several points, and their clocks
    #[command(after_help = "\
Examples:
  vantage align agent=agent.pcapng softswitch=softswitch.pcap gateway=gateway.pcap
  vantage align --reference softswitch --format json a.pcapng s.pcap
  vantage align --offset gateway=-0.420 agent=a.pcapng gateway=g.pcap

A bare path is named after its file stem. The first capture is the reference clock unless
--reference names another. offset_s is the capture's clock minus the reference clock.")]
    Align(AlignArgs),
    /// Every packet of one lined-up connection, from every vantage, on the reference clock
    #[command(after_help = "\
Examples:
  vantage timeline --conn L3 agent=agent.pcapng softswitch=softswitch.pcap")]
    Timeline(TimelineArgs),
    /// Measure a path's idle timeout: hold connections silent for different times, bisecting
    #[command(after_help = "\
Examples:
  vantage probe --subprotocol sip --tcp-keepalive 30s ws://sbc.example:8080/ws
  vantage probe --min-idle 1s --max-idle 15m --format json wss://lb.example/ws
  vantage probe --fail-below 60s --quiet tcp://127.0.0.1:7

Exit codes: 0 done; 1 the path kills idle connections sooner than --fail-below; 2 an error.")]
    Probe(crate::probe::cli::ProbeArgs),
}

/// Resource caps (memory follows live connections, and hostile captures stay bounded), and the
/// BPF filter where libpcap is built in.
#[derive(clap::Args, Debug, Clone)]
pub struct Limits {
    /// Keep only the frames this BPF expression accepts (tcpdump syntax; compiled by libpcap
    /// for each link type)
    #[cfg(feature = "libpcap")]
    #[arg(long, short = 'f', value_name = "BPF")]
    pub filter: Option<String>,
    /// Connections tracked at once per capture; past it the least recently active are
    /// summarised early
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub max_connections: usize,
    /// Connections kept per capture for the report
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub max_summaries: usize,
    /// Bytes held out of order per connection direction for stream reassembly
    #[arg(long, value_name = "BYTES", default_value_t = crate::tcp::reassembly::DEFAULT_CAP)]
    pub reassembly_cap: usize,
    /// Threads that track connections, shared among the captures, and that then compare them
    /// to line them up (default: one per core, at most 8). The output does not depend on it
    /// unless a cap above is reached
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: Option<u16>,
}

impl VantageArgs {
    /// The capture files, in command-line order (the order of the alignment's vantages).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.captures.iter().map(|c| c.path.clone()).collect()
    }
}

impl Limits {
    pub fn filter(&self) -> Option<&str> {
        #[cfg(feature = "libpcap")]
        return self.filter.as_deref();
        #[cfg(not(feature = "libpcap"))]
        None
    }

    pub fn tracker(&self) -> crate::tcp::TrackerOptions {
        crate::tcp::TrackerOptions {
            max_live: self.max_connections.max(1),
            max_summaries: self.max_summaries,
            reassembly_cap: self.reassembly_cap,
            shards: self.threads.map_or_else(
                || std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
                usize::from,
            ),
            ..Default::default()
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct VantageArgs {
    #[command(flatten)]
    pub limits: Limits,
    /// The reference clock (a vantage name; default: the first capture)
    #[arg(long, value_name = "NAME")]
    pub reference: Option<String>,
    /// Clock offset of a capture, NAME=SECONDS (capture clock minus reference); wins over the
    /// estimate
    #[arg(long = "offset", value_name = "NAME=SECONDS", value_parser = parse_offset)]
    pub offsets: Vec<(String, f64)>,
    /// Captures, each NAME=FILE or FILE (named after its stem)
    #[arg(required = true, value_name = "NAME=CAPTURE")]
    pub captures: Vec<VantageSpec>,
}

#[derive(clap::Args, Debug)]
pub struct DiagnoseArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Write the report to FILE (atomically: a temporary file renamed into place)
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Exit 1 when a finding at or above this severity exists
    #[arg(long, value_enum, value_name = "SEVERITY")]
    pub fail_on: Option<FailOn>,
    /// Evidence items kept per finding
    #[arg(long, value_name = "N", default_value_t = crate::diagnose::MAX_EVIDENCE)]
    pub max_evidence: usize,
    /// Language of the report's sentences: en or zh-CN (default: from LC_ALL, LC_MESSAGES or
    /// LANG, English otherwise)
    #[arg(long, value_name = "LANG")]
    pub lang: Option<crate::diagnose::Lang>,
    #[command(flatten)]
    pub vantages: VantageArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Markdown,
    Json,
    Html,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Info,
    Warning,
    Critical,
}

#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false, id = "what")]
pub struct ExtractWhat {
    /// A finding id from `vantage diagnose` (F1, ...)
    #[arg(long, value_name = "ID", group = "what")]
    pub finding: Option<String>,
    /// A lined-up connection id from `vantage align` (L1, ...)
    #[arg(long, value_name = "ID", group = "what")]
    pub conn: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct ExtractArgs {
    #[command(flatten)]
    pub what: ExtractWhat,
    /// The pcapng to write (atomically)
    #[arg(short = 'o', long = "output", value_name = "FILE", required = true)]
    pub output: PathBuf,
    #[command(flatten)]
    pub vantages: VantageArgs,
}

#[cfg(feature = "libpcap")]
#[derive(clap::Args, Debug)]
pub struct CaptureArgs {
    /// Interface to capture on
    #[arg(short = 'i', long, value_name = "IFACE")]
    pub interface: String,
    /// BPF capture filter (tcpdump syntax)
    #[arg(short = 'f', long, value_name = "BPF")]
    pub filter: Option<String>,
    /// How long to capture: 500ms, 60s, 5m, 1h
    #[arg(long, value_name = "DURATION", value_parser = crate::live::parse_duration)]
    pub duration: std::time::Duration,
    /// Bytes kept of each packet
    #[arg(short = 's', long, default_value_t = 262144)]
    pub snaplen: i32,
    /// The pcapng to write
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct AlignArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = FlowsFormat::Table)]
    pub format: FlowsFormat,
    /// Language of the report's sentences: en or zh-CN (default: from LC_ALL, LC_MESSAGES or
    /// LANG, English otherwise)
    #[arg(long, value_name = "LANG")]
    pub lang: Option<crate::diagnose::Lang>,
    #[command(flatten)]
    pub vantages: VantageArgs,
}

#[derive(clap::Args, Debug)]
pub struct TimelineArgs {
    /// The lined-up connection (its id from `vantage align`, e.g. L3)
    #[arg(long, value_name = "ID")]
    pub conn: String,
    /// Output format
    #[arg(long, value_enum, default_value_t = FlowsFormat::Table)]
    pub format: FlowsFormat,
    #[command(flatten)]
    pub vantages: VantageArgs,
}

fn parse_offset(s: &str) -> Result<(String, f64), String> {
    let (name, secs) = s
        .split_once('=')
        .ok_or_else(|| format!("{s}: expected NAME=SECONDS, e.g. gateway=-0.420"))?;
    let secs: f64 = secs
        .trim_start_matches('+')
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{s}: {secs} is not a number of seconds"))?;
    Ok((name.to_string(), secs))
}

#[derive(clap::Args, Debug)]
pub struct FlowsArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = FlowsFormat::Table)]
    pub format: FlowsFormat,
    /// Print one connection's application events in time order (its uid, from the table or
    /// the JSON)
    #[arg(long, value_name = "UID")]
    pub detail: Option<String>,
    /// Write each connection as soon as it is over (Zeek's conn.log order: by end, not by
    /// start) and keep nothing, so memory follows the connections alive at a time whatever the
    /// capture's length. JSON lines only
    #[arg(long, conflicts_with = "detail")]
    pub stream: bool,
    #[command(flatten)]
    pub limits: Limits,
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
    crate::pipeline::tune_malloc();
    crate::progress::configure(cli.color);
    if cli.stats {
        crate::stats::enable();
    }
    let code = run_command(cli.command);
    crate::stats::mark(|| "done".into());
    crate::stats::print();
    code
}

fn run_command(command: Command) -> ExitCode {
    match command {
        Command::Flows(args) => flows(args),
        Command::Probe(args) => crate::probe::cli::run(args),
        // Packet samples line connections up across captures and draw the HTML timeline; one
        // capture reported as text, Markdown or JSON needs neither, and not keeping them is
        // most of a live connection's memory.
        Command::Diagnose(args) => match lined_up(
            &args.vantages,
            args.vantages.captures.len() > 1 || args.format == ReportFormat::Html,
            args.format == ReportFormat::Html,
            // No report of the diagnosis prints HTTP headers: it reads whether and when the
            // upgrade succeeded.
            false,
            // The HTML report draws registrations and calls on its timeline; the others print
            // findings, which read only what `TrackerOptions::app_details` keeps.
            args.format == ReportFormat::Html,
            // One capture, not drawn: the connections no rule ends are kept as digests (the
            // rules decide which as each is summarised). Lining captures up reads every
            // connection's samples, and the HTML report draws connections whole.
            (args.vantages.captures.len() == 1 && args.format != ReportFormat::Html)
                .then_some(crate::diagnose::rules::kept_as as _),
            // Several captures, not drawn: past `align::CONNECTIONS_IN_MEMORY` connections,
            // each waits in a file once tracked, its digest and what lining up reads of it in
            // memory.
            (args.vantages.captures.len() > 1 && args.format != ReportFormat::Html)
                .then_some(crate::align::CONNECTIONS_IN_MEMORY),
        ) {
            Ok((al, failed)) => {
                let tracked_on_threads = al.vantages.iter().any(|v| v.flows.tracked_on_threads);
                let d = crate::pipeline::after_tracking(tracked_on_threads, || {
                    crate::diagnose::diagnose_with(
                        &al,
                        args.max_evidence,
                        args.lang.unwrap_or_else(crate::diagnose::Lang::from_env),
                    )
                });
                let out = match args.format {
                    ReportFormat::Text => report::diagnose_text(&d, &al),
                    ReportFormat::Markdown => report::diagnose_markdown(&d, &al),
                    // Written as it is formatted (the other reports are capped in size).
                    ReportFormat::Json => String::new(),
                    ReportFormat::Html => report::html::render(&d, &al),
                };
                let write = |w: &mut dyn Write| match args.format {
                    ReportFormat::Json => report::write_diagnose_json(&d, w),
                    _ => w.write_all(out.as_bytes()),
                };
                if let Some(path) = &args.output {
                    if let Err(e) = crate::report::write_atomically_with(path, write) {
                        return error(e);
                    }
                } else {
                    let mut stdout = std::io::stdout().lock();
                    // A closed pipe (`| head`) is not an error worth a message.
                    let _ = write(&mut stdout);
                    let _ = stdout.flush();
                }
                let threshold = args.fail_on.map(|f| match f {
                    FailOn::Info => crate::diagnose::Severity::Info,
                    FailOn::Warning => crate::diagnose::Severity::Warning,
                    FailOn::Critical => crate::diagnose::Severity::Critical,
                });
                let code = match threshold {
                    _ if failed => ExitCode::from(2),
                    Some(t) if d.findings.kinds().any(|(_, s)| s >= t) => ExitCode::from(1),
                    _ => ExitCode::SUCCESS,
                };
                drop_unwaited((al, d));
                code
            }
            Err(e) => error(e),
        },
        Command::Extract(args) => match lined_up_bare(&args.vantages) {
            Ok((al, failed)) => {
                let paths = args.vantages.paths();
                let d = args
                    .what
                    .finding
                    .as_ref()
                    .map(|_| crate::diagnose::diagnose(&al));
                let what = match (&args.what.finding, &args.what.conn) {
                    (Some(f), _) => crate::extract::Selection::Finding(f),
                    (None, Some(c)) => crate::extract::Selection::Connection(c),
                    (None, None) => unreachable!("clap requires one"),
                };
                match crate::extract::extract(&al, d.as_ref(), &paths, what, &args.output) {
                    Ok(n) => {
                        eprintln!("vantage: wrote {n} packets to {}", args.output.display());
                        exit(failed)
                    }
                    Err(e) => error(e),
                }
            }
            Err(e) => error(e),
        },
        #[cfg(feature = "libpcap")]
        Command::Capture(args) => {
            let opts = crate::live::LiveOptions {
                interface: args.interface,
                filter: args.filter,
                duration: args.duration,
                snaplen: args.snaplen,
            };
            match crate::live::capture(&opts, &args.output) {
                Ok(n) => {
                    eprintln!("vantage: wrote {n} packets to {}", args.output.display());
                    ExitCode::SUCCESS
                }
                Err(e) => error(e),
            }
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "vantage", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            match clap_mangen::Man::new(cmd).render(&mut out) {
                Ok(()) => {
                    print(&String::from_utf8_lossy(&out));
                    ExitCode::SUCCESS
                }
                Err(e) => error(e.into()),
            }
        }
        Command::Align(args) => match lined_up_bare(&args.vantages) {
            Ok((al, failed)) => {
                let out = match args.format {
                    FlowsFormat::Table => report::align_table_in(
                        &al,
                        &crate::diagnose::Catalog::new(
                            args.lang.unwrap_or_else(crate::diagnose::Lang::from_env),
                        ),
                    ),
                    FlowsFormat::Json => report::align_json(&al),
                };
                print(&out);
                exit(failed)
            }
            Err(e) => error(e),
        },
        Command::Timeline(args) => match lined_up_bare(&args.vantages) {
            Ok((al, failed)) => {
                let paths = args.vantages.paths();
                match crate::align::timeline(&al, &args.conn, &paths) {
                    Ok(events) => {
                        let out = match args.format {
                            FlowsFormat::Table => report::timeline_table(&events),
                            FlowsFormat::Json => report::timeline_json(&events),
                        };
                        print(&out);
                        exit(failed)
                    }
                    Err(e) => error(e),
                }
            }
            Err(e) => error(e),
        },
    }
}

fn print(out: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a message.
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

fn exit(failed: bool) -> ExitCode {
    if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn error(e: anyhow::Error) -> ExitCode {
    eprintln!("vantage: error: {e:#}");
    ExitCode::from(2)
}

/// `lined_up` for `align`, `timeline` and `extract`: they print the alignment, read the packets
/// again from the files, or diagnose; none prints HTTP heads, heartbeat intervals or the
/// application details. Packet samples line captures up, so one capture needs none: on the
/// 200 MB synth, keeping them anyway cost ~110 MB.
fn lined_up_bare(args: &VantageArgs) -> anyhow::Result<(crate::align::Alignment, bool)> {
    lined_up(
        args,
        args.captures.len() > 1,
        false,
        false,
        false,
        None,
        None,
    )
}

/// Reads the vantages and lines them up. Errors reading a capture are printed and make the exit
/// code 2, but what was read is still used; a wrong `--reference` is an error.
fn lined_up(
    args: &VantageArgs,
    keep_samples: bool,
    timeline: bool,
    http_heads: bool,
    app_details: bool,
    digest: Option<crate::tcp::KeptAs>,
    in_file_past: Option<usize>,
) -> anyhow::Result<(crate::align::Alignment, bool)> {
    let mut names = std::collections::HashSet::new();
    for c in &args.captures {
        if !names.insert(&c.name) {
            anyhow::bail!("two captures are named {}: name them NAME=FILE", c.name);
        }
    }
    let opts = crate::tcp::TrackerOptions {
        keep_samples,
        timeline,
        ..args.limits.tracker()
    };
    let opts = crate::tcp::TrackerOptions {
        http_heads,
        app_details,
        digest,
        // Lining captures up keeps every connection whole (their samples): those that ended
        // wait in a file while the live ones need the memory. Not with the details only the
        // HTML report reads, which the file's encoding refuses.
        finished_in_file: keep_samples && digest.is_none() && !http_heads && !app_details,
        ..opts
    };
    let (mut vantages, errors) = read_vantages_filtered(&args.captures, opts, args.limits.filter());
    let failed = !errors.is_empty();
    for e in &errors {
        eprintln!("vantage: error: {e:#}");
    }
    for v in &vantages {
        for w in &v.flows.summary.warnings {
            warn(&format!("{}: {w}", v.flows.summary.path));
        }
    }
    if vantages.is_empty() {
        anyhow::bail!("no capture could be read");
    }
    let connections: usize = vantages.iter().map(|v| v.flows.connections.len()).sum();
    if in_file_past.is_some_and(|past| connections > past) {
        // `diagnose::rules::kept_as`'s digest: the rules read it as they read one capture's.
        // One capture at a time, each on a thread of the tracking threads' malloc arena
        // (`pipeline::after_tracking`), where its connections are: on the 500 MB NAT pair the
        // alignment then held 49 MiB and the rules 55, where they held 68 and 77 done on this
        // thread (the peak, the first capture's making, the same: 114). Both at once took 0.17
        // s instead of 0.25, for a peak of 124.
        for v in &mut vantages {
            std::thread::scope(|scope| {
                scope.spawn(|| v.flows.keep_in_file(crate::diagnose::rules::kept_as));
            });
            crate::pipeline::release_freed();
        }
        crate::stats::mark(|| "kept in a file".into());
    }
    let reference = match &args.reference {
        Some(name) => vantages
            .iter()
            .position(|v| &v.name == name)
            .ok_or_else(|| anyhow::anyhow!("--reference {name}: no capture has that name"))?,
        None => 0,
    };
    for (name, _) in &args.offsets {
        if !vantages.iter().any(|v| &v.name == name) {
            anyhow::bail!("--offset {name}=...: no capture has that name");
        }
    }
    let opts = crate::align::AlignOptions {
        reference,
        offsets: args.offsets.clone(),
        threads: args.limits.tracker().shards,
    };
    let al = crate::align::align(vantages, &opts);
    crate::stats::mark(|| "lined up".into());
    Ok((al, failed))
}

/// `v` dropped on a thread of its own, which the process does not wait for: the report is
/// written, and freeing every connection one at a time held the exit back (the 100 MB NAT
/// pair's connections in memory: 0.035 s of 0.76). Its temporary files are anonymous
/// (`tempfile::tempfile`), gone with the process whether or not the thread got to them.
fn drop_unwaited<T: Send + 'static>(v: T) {
    // A thread that cannot start hands `v` back in its error, dropped here.
    let _ = std::thread::Builder::new().spawn(move || drop(v));
}

fn warn(msg: &str) {
    eprintln!("vantage: warning: {msg}");
}

/// A capture's warnings, and the error that stopped reading it if any; true when there was one.
fn print_read(
    path: &std::path::Path,
    summary: &crate::pipeline::CaptureSummary,
    error: Option<&anyhow::Error>,
) -> bool {
    for w in &summary.warnings {
        warn(&format!("{}: {w}", path.display()));
    }
    error.is_some_and(print_read_error)
}

/// An error reading a capture (it names the file); always true, for `failed |= ...`.
fn print_read_error(e: &anyhow::Error) -> bool {
    eprintln!("vantage: error: {e:#}");
    true
}

/// `flows --stream`: every connection printed as it is summarised.
fn flows_stream(args: FlowsArgs) -> ExitCode {
    if args.format != FlowsFormat::Json {
        eprintln!("vantage: error: --stream writes JSON lines: add --format json");
        return ExitCode::from(2);
    }
    let opts = json_lines_options(&args);
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    // One thread per capture, merged by the time each connection ended (a closed pipe, `| head`,
    // is not an error worth a message).
    let runs = crate::pipeline::merge_streams_mapped(
        &args.captures,
        opts,
        args.limits.filter(),
        &|c| report::flow_json_line(&c),
        |_, _, line| {
            let _ = writeln!(out, "{line}");
        },
    );
    let failed = print_runs(&args.captures, runs);
    let _ = out.flush();
    exit(failed)
}

/// What `flows --format json` and `--stream` track: what a line prints (`report::FlowRecord`),
/// without what only alignment (packet samples) and the HTML report (every heartbeat interval,
/// every registration: a line says how many) read.
fn json_lines_options(args: &FlowsArgs) -> crate::tcp::TrackerOptions {
    crate::tcp::TrackerOptions {
        keep_samples: false,
        timeline: false,
        sip_registrations: false,
        ..args.limits.tracker()
    }
}

/// Each streamed capture's warnings and error (`print_read`), in command-line order; true when
/// one could not be read.
fn print_runs(paths: &[PathBuf], runs: Vec<anyhow::Result<crate::pipeline::CaptureRun>>) -> bool {
    let mut failed = false;
    for (path, run) in paths.iter().zip(runs) {
        failed |= match run {
            Ok(run) => print_read(path, &run.summary, run.error.as_ref()),
            Err(e) => print_read_error(&e),
        };
    }
    failed
}

/// `pipeline::merge_streams` over `flows`' captures: each connection is handed to `keep` as
/// it is summarised, within `--max-summaries` a capture (the first ones handed over stay, the
/// rest are counted and said in their capture's warnings, as the tracker did when it kept the
/// summaries). Prints the captures' warnings and errors. Whether one could not be read, or
/// the first error `keep` met.
fn merge_capped<R: Send>(
    args: &FlowsArgs,
    opts: crate::tcp::TrackerOptions,
    map: &(dyn Fn(crate::tcp::Connection) -> R + Sync),
    mut keep: impl FnMut(usize, bool, R) -> std::io::Result<()>,
) -> anyhow::Result<bool> {
    let max = opts.max_summaries;
    let mut kept = vec![0usize; args.captures.len()];
    let mut dropped = vec![0u64; args.captures.len()];
    let mut keep_error = None;
    let mut runs = crate::pipeline::merge_streams_mapped(
        &args.captures,
        opts,
        args.limits.filter(),
        map,
        |i, at_end, r| {
            if kept[i] < max {
                kept[i] += 1;
                if let Err(e) = keep(i, at_end, r) {
                    keep_error.get_or_insert(e);
                }
            } else {
                dropped[i] += 1;
            }
        },
    );
    for (run, &n) in runs.iter_mut().zip(&dropped) {
        if let (Ok(run), true) = (run, n > 0) {
            run.summary
                .warnings
                .push(crate::tcp::summaries_dropped(n, max));
        }
    }
    let failed = print_runs(&args.captures, runs);
    match keep_error {
        Some(e) => Err(anyhow::anyhow!("writing to a temporary file: {e}")),
        None => {
            // Every connection summarised and kept (a row or a line in the store): what is
            // left to the caller is the sort and the copy out.
            crate::stats::mark(|| "tracked".into());
            Ok(failed)
        }
    }
}

/// `flows` as a table: each connection becomes its row (`report::FlowRows`) as it is
/// summarised (`merge_capped`) and is dropped, instead of every summary being kept until the
/// end (`track_capture_filtered`), and the rows are then sorted as the connections were. Peak
/// RSS on the synths (MiB), two threads / one: 2 GB 96.5 / 96.1 -> 52.3 / 49.9; 200 MB, where
/// the connections live at once are most of it, 34.6 / 33.1 -> 33.7 / 31.8. The rows' text in
/// a temporary file since: 2 GB 54.5 -> 41.7 MB (KB/1000).
fn flows_table(args: FlowsArgs) -> ExitCode {
    // The table prints only what TCP tracking finds (state, history, counters, the end): no
    // stream reassembly or WebSocket/SIP/heartbeat parsing for it, which is a third of the time
    // and most of a live connection's memory.
    let opts = crate::tcp::TrackerOptions {
        app: false,
        detail: false,
        detail_uid: None,
        keep_samples: false,
        timeline: false,
        ..args.limits.tracker()
    };
    let mut rows = report::FlowRows::new(args.captures.len() > 1);
    let failed = match merge_capped(&args, opts, &|c| c, |i, _, c| rows.push(&c, i)) {
        Ok(failed) => failed,
        Err(e) => return error(e),
    };
    rows.sort();
    // A closed pipe (`| head`) is not an error worth a message.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let _ = rows.write(&mut out);
    let _ = out.flush();
    exit(failed)
}

/// `flows --format json`: each connection's line is written as it is summarised
/// (`merge_capped`) to a temporary file (`report::sorted_lines`), and the lines are then
/// printed in start order, as the kept connections were. Peak RSS (KB/1000), two threads:
/// 2 GB synth 361 -> 143, 200 MB 87 -> 77; what is left is the connections live at once.
///
/// With one capture, the lines of the connections still live at its end, which come last and
/// in start order, go out as they come, after the lines before them (`SortedLines::
/// push_at_end`), not through the file: on the 200 MB synth 38 of its 50 MB.
fn flows_json(args: FlowsArgs) -> ExitCode {
    let opts = json_lines_options(&args);
    let mut lines = report::sorted_lines::SortedLines::new();
    // A closed pipe (`| head`) is not an error worth a message: what follows is not written.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut closed = false;
    let mut print = |line: &[u8]| {
        if !closed {
            closed = out
                .write_all(line)
                .and_then(|_| out.write_all(b"\n"))
                .is_err();
        }
        Ok(())
    };
    let one_capture = args.captures.len() == 1;
    // Each line is rendered on the thread that tracked its connection (`merge_streams_mapped`).
    let line = |c: crate::tcp::Connection| (c.ts, c.first_frame, report::flow_json_line(&c));
    let keep = |i, at_end, (ts, first_frame, line): (_, _, String)| match at_end && one_capture {
        true => lines.push_at_end(ts, first_frame, i, &line, &mut print),
        false => lines.push(ts, first_frame, i, &line),
    };
    let failed = match merge_capped(&args, opts, &line, keep) {
        Ok(failed) => failed,
        Err(e) => return error(e),
    };
    let _ = lines.for_each(true, &mut print);
    let _ = out.flush();
    exit(failed)
}

fn flows(args: FlowsArgs) -> ExitCode {
    if args.stream {
        return flows_stream(args);
    }
    let Some(uid) = args.detail.clone() else {
        return match args.format {
            FlowsFormat::Table => flows_table(args),
            FlowsFormat::Json => flows_json(args),
        };
    };
    // `--detail UID`: one connection's events.
    let mut failed = false;
    let mut all = Vec::new();
    let opts = crate::tcp::TrackerOptions {
        // The connection's application events, which `--detail` prints.
        app: true,
        detail: true,
        detail_uid: Some(crate::tcp::uid_key(&uid)),
        keep_samples: false,
        timeline: false,
        ..args.limits.tracker()
    };
    for path in &args.captures {
        match crate::pipeline::track_capture_filtered(path, opts, args.limits.filter()) {
            Ok(flows) => {
                failed |= print_read(path, &flows.summary, flows.error.as_ref());
                all.push(flows);
            }
            Err(e) => failed |= print_read_error(&e),
        }
    }
    let mut conns: Vec<&crate::tcp::Connection> = all
        .iter()
        .flat_map(|f| f.connections.iter().map(|c| &**c))
        .collect();
    conns.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.first_frame.cmp(&b.first_frame)));
    let Some(c) = conns.iter().find(|c| c.uid.as_str() == uid) else {
        eprintln!("vantage: error: no connection with uid {uid} in these captures");
        return ExitCode::from(2);
    };
    print(&report::detail(c, args.format));
    exit(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every lab scenario's captures (its manifest's, the copies made before its clocks were
    /// shifted aside), as `vantage diagnose --threads THREADS NAME=FILE...` reads them.
    fn scenarios(threads: u16) -> Vec<VantageArgs> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|d| d.join("scenario.json").exists())
            .collect();
        dirs.sort();
        dirs.iter()
            .map(|d| {
                let manifest = std::fs::read_to_string(d.join("scenario.json")).unwrap();
                let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
                let mut argv = vec!["vantage".into(), "diagnose".into(), "--threads".into()];
                argv.push(threads.to_string());
                for (name, file) in manifest["files"].as_object().unwrap() {
                    if !name.ends_with("_unshifted") {
                        let file = d.join(file.as_str().unwrap());
                        argv.push(format!("{name}={}", file.display()));
                    }
                }
                match Cli::try_parse_from(argv).unwrap().command {
                    Command::Diagnose(args) => args.vantages,
                    _ => unreachable!("a diagnose command line"),
                }
            })
            .collect()
    }

    /// `diagnose`'s path past `align::CONNECTIONS_IN_MEMORY`, forced from the first connection
    /// (every capture's connections written to the file on a thread of its own, then lined up
    /// and diagnosed): for every lab scenario on one thread and on two, the JSON and text
    /// reports `diagnose` prints below the threshold, and every capture did go to the file.
    #[test]
    fn diagnose_past_the_threshold_prints_the_same_reports() {
        let mut in_file = 0;
        for threads in [1, 2] {
            for args in scenarios(threads) {
                let report = |past| {
                    let (al, failed) =
                        lined_up(&args, true, false, false, false, None, past).unwrap();
                    assert!(!failed);
                    let files = al
                        .vantages
                        .iter()
                        .filter(|v| !v.flows.views.is_empty())
                        .count();
                    let d = crate::diagnose::diagnose_with(
                        &al,
                        crate::diagnose::MAX_EVIDENCE,
                        crate::diagnose::Lang::En,
                    );
                    (
                        report::diagnose_json(&d),
                        report::diagnose_text(&d, &al),
                        files,
                    )
                };
                let (below, past) = (report(None), report(Some(0)));
                assert_eq!(below.2, 0);
                assert_eq!(past.2, args.captures.len());
                assert_eq!(below.0, past.0);
                assert_eq!(below.1, past.1);
                in_file += past.2;
            }
        }
        assert!(in_file > 20, "{in_file}");
    }
}

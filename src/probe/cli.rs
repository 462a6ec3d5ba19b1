//! `vantage probe`: its arguments, and the text and JSON renderings of its report.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::{fmt_secs, parse_duration, ActsOn, Expiry, ProbeOptions, ProbeReport, Target};

#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// The path to probe: ws://HOST:PORT/PATH, wss://HOST:PORT/PATH, or tcp://HOST:PORT (a
    /// server that echoes what it receives)
    #[arg(value_name = "URL")]
    pub target: Target,
    /// Shortest silence tried
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub min_idle: Duration,
    /// Longest silence tried (nothing killed up to it: no timeout reported)
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = parse_duration)]
    pub max_idle: Duration,
    /// Connections held at once in each round
    #[arg(long, value_name = "K", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: u16,
    /// Stop when the timeout is known within ± this
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub tolerance: Duration,
    /// Most rounds of the search
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=20))]
    pub max_rounds: u16,
    /// How long to wait for the answer to a ping before calling the connection silently dropped
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub reply_timeout: Duration,
    /// WebSocket subprotocol to ask for (e.g. sip)
    #[arg(long, value_name = "NAME")]
    pub subprotocol: Option<String>,
    /// Also check whether TCP keep-alives at this interval keep a connection alive (at least 1s)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub tcp_keepalive: Option<Duration>,
    /// wss: accept any server certificate (self-signed lab certificates)
    #[arg(long)]
    pub insecure: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = ProbeFormat::Text)]
    pub format: ProbeFormat,
    /// Exit 1 when the path kills idle connections sooner than this (the estimate's midpoint)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub fail_below: Option<Duration>,
    /// No progress on stderr
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeFormat {
    Text,
    Json,
}

/// Runs `vantage probe`: 0 done, 1 `--fail-below` tripped, 2 an error.
pub fn run(args: ProbeArgs) -> ExitCode {
    if let Some(ka) = args.tcp_keepalive {
        if ka < Duration::from_secs(1) || ka.subsec_nanos() != 0 {
            return error("--tcp-keepalive: whole seconds, at least 1s (the kernel's unit)");
        }
    }
    if args.min_idle.is_zero() || args.min_idle >= args.max_idle {
        return error("--min-idle must be above 0 and below --max-idle");
    }
    let opts = ProbeOptions {
        target: args.target.clone(),
        min_idle: args.min_idle,
        max_idle: args.max_idle,
        parallel: args.parallel as usize,
        tolerance: args.tolerance,
        max_rounds: args.max_rounds as usize,
        reply_timeout: args.reply_timeout,
        subprotocol: args.subprotocol.clone(),
        tcp_keepalive: args.tcp_keepalive,
        insecure: args.insecure,
        connect_timeout: Duration::from_secs(10),
    };
    let quiet = args.quiet;
    let progress: Arc<dyn Fn(&str) + Send + Sync> = Arc::new(move |line: &str| {
        if !quiet {
            eprintln!("vantage probe: {line}");
        }
    });
    let report = match super::run_probe(&opts, progress) {
        Ok(r) => r,
        Err(e) => return error(&format!("{e:#}")),
    };
    let out = match args.format {
        ProbeFormat::Text => text(&report),
        ProbeFormat::Json => {
            let mut s = serde_json::to_string_pretty(&report).expect("the report serialises");
            s.push('\n');
            s
        }
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    match (args.fail_below, report.idle_timeout_s) {
        (Some(limit), Some(t)) if t < limit.as_secs_f64() => ExitCode::from(1),
        (Some(limit), None) if limit > args.max_idle => {
            eprintln!(
                "vantage: warning: --fail-below {} s is beyond --max-idle {} s: not checked",
                fmt_secs(limit.as_secs_f64()),
                fmt_secs(args.max_idle.as_secs_f64())
            );
            ExitCode::SUCCESS
        }
        _ => ExitCode::SUCCESS,
    }
}

fn error(msg: &str) -> ExitCode {
    eprintln!("vantage: error: {msg}");
    ExitCode::from(2)
}

/// The report for people.
pub fn text(r: &ProbeReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Path: {}", r.target);
    match (r.idle_timeout_s, r.bound_s, r.upper_s) {
        (Some(t), Some(b), Some(hi)) => {
            let _ = writeln!(
                o,
                "Idle timeout: {} s ± {} s (alive after {} s of silence, dead after {} s)",
                fmt_secs(t),
                fmt_secs(b),
                fmt_secs(r.lower_s),
                fmt_secs(hi)
            );
        }
        _ => {
            let _ = writeln!(
                o,
                "Idle timeout: none found (every connection survived {} s of silence)",
                fmt_secs(r.max_idle_s)
            );
        }
    }
    if let Some(e) = r.on_timeout {
        let what = match e {
            Expiry::Rst => "RST",
            Expiry::Fin => "FIN",
            Expiry::Silent => "silent drop",
        };
        let when = match r.acts_on {
            Some(ActsOn::Timer) => "sent on the path's own timer, while the connection was idle",
            Some(ActsOn::NextPacket) if e == Expiry::Silent => "found by the next packet",
            Some(ActsOn::NextPacket) => "in answer to the next packet",
            None => "",
        };
        let _ = write!(o, "On expiry: {what} ({when})");
        match &r.on_timeout_detail {
            Some(d) => {
                let _ = writeln!(o, ": {d}");
            }
            None => o.push('\n'),
        }
    }
    if let Some(ka) = r.keepalive_interval_s {
        let verdict = match r.keepalive_effective {
            Some(true) => "keep the connection alive",
            Some(false) => "do NOT keep the connection alive",
            None => "not tested",
        };
        let _ = write!(o, "TCP keep-alives every {} s: {verdict}", fmt_secs(ka));
        match &r.keepalive_detail {
            Some(d) => {
                let _ = writeln!(o, " ({d})");
            }
            None => o.push('\n'),
        }
    }
    let _ = writeln!(
        o,
        "Search: {} round{}, {} connections, {} s",
        r.rounds.len(),
        if r.rounds.len() == 1 { "" } else { "s" },
        r.connections,
        fmt_secs(r.duration_s)
    );
    for (i, round) in r.rounds.iter().enumerate() {
        let mut parts = Vec::new();
        for t in &round.trials {
            parts.push(match t.outcome {
                "alive" => format!("{} alive", fmt_secs(t.silence_s)),
                "killed" => format!(
                    "{} {}{}",
                    fmt_secs(t.silence_s),
                    t.expiry.map_or("?".into(), |e| e.to_string()),
                    match (t.during_silence, t.killed_at_s) {
                        (true, Some(at)) => format!("@{}", fmt_secs(at)),
                        _ => String::new(),
                    }
                ),
                _ => format!("{} abandoned", fmt_secs(t.silence_s)),
            });
        }
        let _ = writeln!(o, "  round {}: {}", i + 1, parts.join(", "));
    }
    for n in &r.notes {
        let _ = writeln!(o, "Note: {n}");
    }
    o
}

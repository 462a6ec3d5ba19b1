//! `vantage probe`: measures a path's idle timeout by holding connections silent.
//!
//! Each round opens K connections at once through the path (WebSocket handshake included) and
//! keeps each silent for a different time; after its silence each sends a ping (a WebSocket
//! ping, or one byte an echo server returns) and watches what comes back: the answer, a RST, a
//! FIN, or nothing within `reply_timeout` (a silent drop). A connection the path closes while it
//! is still silent is killed at that moment: a proxy acting on its own timer (HAProxy, nginx)
//! gives the timeout directly. After each round the interval narrows to
//! [longest silence survived, shortest kill]; the rounds go on until the interval is within the
//! tolerance. A round lasts about as long as its longest silence, and less: once one connection
//! is killed, those with longer silences are abandoned (they would be killed too).
//!
//! Silences start when the handshake completes (the last byte the path forwarded); with
//! symmetric delays the time at which a timer's FIN or RST arrives is then the timer itself,
//! give or take a round trip.
//!
//! The search's connections never use TCP keep-alives. With `tcp_keepalive`, one more connection
//! has them (socket2's `TcpKeepalive`, first probe and interval both the given time) and stays
//! silent well past the upper bound found: if it still answers, the keep-alives kept it alive
//! (the path counts them as activity); many balancers count payload only and ignore them.

pub mod cli;
mod conn;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use conn::{Event, Opener};

/// What the path does to a connection when its idle timeout expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expiry {
    /// A RST (an abortive close, or a firewall rejecting a packet of a forgotten flow).
    Rst,
    /// A FIN (an orderly close, by a proxy's timer).
    Fin,
    /// Nothing: the ping is never answered and no FIN or RST comes (a black hole).
    Silent,
}

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expiry::Rst => "rst",
            Expiry::Fin => "fin",
            Expiry::Silent => "silent",
        })
    }
}

/// When the path acts: on its own timer (the FIN or RST arrives while the connection is still
/// silent), or only on the next packet (the ping draws the RST, or is swallowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActsOn {
    Timer,
    NextPacket,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    Ws,
    Wss,
    Tcp,
}

/// What to probe: `ws://HOST:PORT/PATH`, `wss://...`, or `tcp://HOST:PORT` (an echo server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// The URL as given (normalised).
    pub url: String,
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let u = url::Url::parse(s).map_err(|e| format!("{s}: not a URL ({e})"))?;
        let scheme = match u.scheme() {
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            "tcp" => Scheme::Tcp,
            other => {
                return Err(format!(
                    "{s}: scheme {other} is not one of ws://, wss://, tcp://"
                ))
            }
        };
        let host = match u.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => return Err(format!("{s}: no host")),
        };
        let port = match (u.port_or_known_default(), scheme) {
            (Some(p), _) => p,
            (None, Scheme::Tcp) => return Err(format!("{s}: tcp:// needs a port")),
            (None, _) => unreachable!("ws and wss have default ports"),
        };
        Ok(Target {
            scheme,
            host,
            port,
            url: u.to_string(),
        })
    }
}

/// Parses a duration written like `1s`, `90s`, `15m`, `1h`, `500ms`, `1.5s` or a bare number of
/// seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s}: expected a duration like 1s, 90s, 15m, 500ms"))?;
    let mult = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        u => return Err(format!("{s}: unknown unit {u} (ms, s, m or h)")),
    };
    let secs = n * mult;
    if !secs.is_finite() || secs > 1e7 {
        return Err(format!("{s}: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The probe's settings.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    pub target: Target,
    pub min_idle: Duration,
    pub max_idle: Duration,
    /// Connections per round.
    pub parallel: usize,
    /// Stop when the timeout is known within ± this.
    pub tolerance: Duration,
    pub max_rounds: usize,
    /// How long to wait for the answer to a ping before calling the drop silent.
    pub reply_timeout: Duration,
    pub subprotocol: Option<String>,
    pub tcp_keepalive: Option<Duration>,
    pub insecure: bool,
    pub connect_timeout: Duration,
}

/// What became of one silent connection.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub silence_s: f64,
    /// `alive`, `killed`, or `abandoned` (a shorter silence was already killed).
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry: Option<Expiry>,
    /// Seconds after the handshake at which the connection was found dead: when the FIN/RST
    /// arrived, or when the ping went unanswered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub killed_at_s: Option<f64>,
    /// The FIN or RST came while the connection was still silent (the path's own timer).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub during_silence: bool,
    /// Time from the ping to its answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The server sent something during the silence (it was not a silence for the path).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub server_spoke: bool,
    #[serde(skip)]
    rtt: Duration,
}

impl Trial {
    fn abandoned(silence: Duration) -> Trial {
        Trial {
            silence_s: round3(silence.as_secs_f64()),
            outcome: "abandoned",
            expiry: None,
            killed_at_s: None,
            during_silence: false,
            answer_ms: None,
            detail: None,
            server_spoke: false,
            rtt: Duration::ZERO,
        }
    }

    /// The silence after which this connection was dead, if it was killed.
    pub fn kill_time(&self) -> Option<f64> {
        (self.outcome == "killed").then(|| {
            if self.during_silence {
                self.killed_at_s.unwrap_or(self.silence_s)
            } else {
                self.silence_s
            }
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// The interval searched: longest silence known to survive, shortest known to kill.
    pub lower_s: f64,
    pub upper_s: Option<f64>,
    pub trials: Vec<Trial>,
}

/// The probe's result (the JSON document of `--format json`).
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub target: String,
    /// Midpoint of the final interval; null when nothing was killed up to `max_idle_s`.
    pub idle_timeout_s: Option<f64>,
    /// Half the final interval's width.
    pub bound_s: Option<f64>,
    /// Longest silence a connection survived (0 if none did).
    pub lower_s: f64,
    /// Shortest silence after which a connection was dead.
    pub upper_s: Option<f64>,
    pub on_timeout: Option<Expiry>,
    pub on_timeout_detail: Option<String>,
    pub acts_on: Option<ActsOn>,
    pub keepalive_interval_s: Option<f64>,
    /// Whether TCP keep-alives at `keepalive_interval_s` kept a connection alive past the
    /// timeout; null when not asked for or not testable.
    pub keepalive_effective: Option<bool>,
    pub keepalive_detail: Option<String>,
    pub min_idle_s: f64,
    pub max_idle_s: f64,
    pub connections: usize,
    pub duration_s: f64,
    pub rounds: Vec<Round>,
    pub notes: Vec<String>,
}

/// Silences for a round over [lo, hi]: the first round spans both ends, spaced geometrically
/// (timeouts range from seconds to hours); later rounds split the open interval evenly.
pub fn plan_silences(lo: f64, hi: f64, k: usize, first: bool) -> Vec<f64> {
    let k = k.max(1);
    if first {
        if k == 1 {
            return vec![hi];
        }
        let lo = lo.max(1e-3);
        let ratio = (hi / lo).powf(1.0 / (k - 1) as f64);
        return (0..k).map(|i| lo * ratio.powi(i as i32)).collect();
    }
    (1..=k)
        .map(|i| lo + (hi - lo) * i as f64 / (k + 1) as f64)
        .collect()
}

/// Narrows [lower, upper] with a round's trials. A connection closed on the path's own timer
/// at t also proves the timer did not fire before t (less a round trip and a little slack), as
/// long as that close is the earliest kill seen.
pub fn narrow(lower: f64, upper: Option<f64>, trials: &[Trial]) -> (f64, Option<f64>) {
    let mut lo = lower;
    let mut hi = upper;
    for t in trials {
        if t.outcome == "alive" {
            lo = lo.max(t.silence_s);
        }
        if let Some(k) = t.kill_time() {
            hi = Some(hi.map_or(k, |h: f64| h.min(k)));
        }
    }
    let earliest = trials
        .iter()
        .filter(|t| t.kill_time().is_some())
        .min_by(|a, b| a.kill_time().unwrap().total_cmp(&b.kill_time().unwrap()));
    if let (Some(t), Some(h)) = (earliest, hi) {
        let k = t.kill_time().unwrap();
        if t.during_silence && k <= h {
            let slack = 2.0 * t.rtt.as_secs_f64() + 0.01;
            lo = lo.max(k - slack).min(h);
        }
    }
    (lo.min(hi.unwrap_or(f64::INFINITY)), hi)
}

/// Runs the probe on a tokio runtime of its own. `progress` gets human-readable lines.
pub fn run_probe(
    opts: &ProbeOptions,
    progress: Arc<dyn Fn(&str) + Send + Sync>,
) -> anyhow::Result<ProbeReport> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(probe(opts, progress))
}

const TICK: Duration = Duration::from_secs(15);

/// The search (see the module's documentation).
pub async fn probe(
    opts: &ProbeOptions,
    progress: Arc<dyn Fn(&str) + Send + Sync>,
) -> anyhow::Result<ProbeReport> {
    anyhow::ensure!(
        opts.min_idle > Duration::ZERO && opts.min_idle < opts.max_idle,
        "--min-idle must be above 0 and below --max-idle"
    );
    let started = Instant::now();
    let opener = Arc::new(Opener::new(
        &opts.target,
        opts.subprotocol.clone(),
        opts.insecure,
        opts.connect_timeout,
    ));
    let min = opts.min_idle.as_secs_f64();
    let max = opts.max_idle.as_secs_f64();
    let tol = opts.tolerance.as_secs_f64();
    let mut lower = 0.0_f64;
    let mut upper: Option<f64> = None;
    let mut rounds: Vec<Round> = Vec::new();
    let mut connections = 0;
    let mut notes = Vec::new();
    let mut keepalive_task: Option<tokio::task::JoinHandle<anyhow::Result<Trial>>> = None;
    let mut keepalive_silence = 0.0;
    let say = |msg: String| progress(&format!("[{:6.1}s] {msg}", started.elapsed().as_secs_f64()));

    for round in 0..opts.max_rounds.max(1) {
        let silences = if round == 0 {
            plan_silences(min, max, opts.parallel, true)
        } else {
            let hi = upper.expect("a later round has an upper bound");
            plan_silences(lower.max(min), hi, opts.parallel, false)
        };
        say(format!(
            "round {}: {} connections, silences {} s",
            round + 1,
            silences.len(),
            silences
                .iter()
                .map(|s| fmt_secs(*s))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        connections += silences.len();
        let trials = run_round(&opener, &silences, opts.reply_timeout, &say).await?;
        let (lo, hi) = narrow(lower, upper, &trials);
        rounds.push(Round {
            lower_s: lower,
            upper_s: upper,
            trials,
        });
        lower = lo;
        upper = hi;
        match upper {
            None => say(format!(
                "round {}: every connection survived up to {} s",
                round + 1,
                fmt_secs(max)
            )),
            Some(h) => say(format!(
                "round {}: the timeout is between {} and {} s",
                round + 1,
                fmt_secs(lower),
                fmt_secs(h)
            )),
        }
        if let (Some(ka), Some(h), None) = (opts.tcp_keepalive, upper, &keepalive_task) {
            // Silent well past the timeout, and long enough for two keep-alives.
            keepalive_silence = (1.5 * h).max(h + 2.0 * ka.as_secs_f64());
            say(format!(
                "keep-alive check: one connection with TCP keep-alives every {} s, silent for {} s",
                fmt_secs(ka.as_secs_f64()),
                fmt_secs(keepalive_silence)
            ));
            connections += 1;
            let opener = opener.clone();
            let reply = opts.reply_timeout;
            let silence = Duration::from_secs_f64(keepalive_silence);
            keepalive_task = Some(tokio::spawn(async move {
                trial(&opener, silence, reply, Some(ka)).await
            }));
        }
        let Some(hi) = upper else { break };
        if hi <= min {
            notes.push(format!(
                "Connections died even after the shortest silence tried ({} s): the timeout is below --min-idle.",
                fmt_secs(min)
            ));
            break;
        }
        if (hi - lower) / 2.0 <= tol {
            break;
        }
    }

    let mut keepalive_effective = None;
    let mut keepalive_detail = None;
    if let Some(task) = keepalive_task {
        say("waiting for the keep-alive check".into());
        let mut task = task;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
        let result = loop {
            tokio::select! {
                r = &mut task => break r,
                _ = tick.tick() => say(format!("keep-alive check: silent until {} s", fmt_secs(keepalive_silence))),
            }
        };
        match result {
            Ok(Ok(t)) => {
                let ka = opts.tcp_keepalive.unwrap_or_default().as_secs_f64();
                if t.outcome == "alive" {
                    keepalive_effective = Some(true);
                    keepalive_detail = Some(format!(
                        "a connection with TCP keep-alives every {} s still answered after {} s of silence, past the timeout: the path counts keep-alives as activity",
                        fmt_secs(ka),
                        fmt_secs(t.silence_s)
                    ));
                } else {
                    keepalive_effective = Some(false);
                    let why = if ka >= upper.unwrap_or(f64::INFINITY) {
                        "the interval is not shorter than the timeout"
                    } else {
                        "the path counts payload only and ignores keep-alives"
                    };
                    keepalive_detail = Some(format!(
                        "a connection with TCP keep-alives every {} s died ({}) after {} s of silence: {why}",
                        fmt_secs(ka),
                        t.expiry.map_or("?".into(), |e| e.to_string()),
                        fmt_secs(t.kill_time().unwrap_or(t.silence_s))
                    ));
                }
                say(keepalive_detail.clone().unwrap_or_default());
            }
            Ok(Err(e)) => notes.push(format!("The keep-alive check failed: {e:#}")),
            Err(e) => notes.push(format!("The keep-alive check failed: {e}")),
        }
    } else if opts.tcp_keepalive.is_some() {
        keepalive_detail =
            Some("not tested: no connection was killed, so there was nothing to keep alive".into());
    }

    // What the path did: the kill that bounds the interval (the earliest one).
    let all: Vec<&Trial> = rounds.iter().flat_map(|r| r.trials.iter()).collect();
    let earliest = all
        .iter()
        .filter(|t| t.kill_time().is_some())
        .min_by(|a, b| a.kill_time().unwrap().total_cmp(&b.kill_time().unwrap()));
    let kinds: std::collections::BTreeSet<String> = all
        .iter()
        .filter_map(|t| t.expiry.map(|e| e.to_string()))
        .collect();
    if kinds.len() > 1 {
        notes.push(format!(
            "Killed connections did not all end the same way: {}.",
            kinds.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if all.iter().any(|t| t.server_spoke) {
        notes.push(
            "The server sent data during some silences; those connections were not idle for the path."
                .into(),
        );
    }
    let (on_timeout, acts_on, detail) = match earliest {
        Some(t) => (
            t.expiry,
            Some(if t.during_silence {
                ActsOn::Timer
            } else {
                ActsOn::NextPacket
            }),
            t.detail.clone(),
        ),
        None => (None, None, None),
    };
    if upper.is_none() {
        notes.push(format!(
            "No connection was killed after up to {} s of silence: the path's idle timeout, if any, is longer.",
            fmt_secs(max)
        ));
    }
    Ok(ProbeReport {
        target: opts.target.url.clone(),
        idle_timeout_s: upper.map(|h| round3((lower + h) / 2.0)),
        bound_s: upper.map(|h| round3((h - lower) / 2.0)),
        lower_s: round3(lower),
        upper_s: upper.map(round3),
        on_timeout,
        on_timeout_detail: detail,
        acts_on,
        keepalive_interval_s: opts.tcp_keepalive.map(|d| d.as_secs_f64()),
        keepalive_effective,
        keepalive_detail,
        min_idle_s: min,
        max_idle_s: max,
        connections,
        duration_s: round3(started.elapsed().as_secs_f64()),
        rounds,
        notes,
    })
}

/// One round: all connections at once; returns when every one is decided or abandoned.
async fn run_round(
    opener: &Arc<Opener>,
    silences: &[f64],
    reply: Duration,
    say: &impl Fn(String),
) -> anyhow::Result<Vec<Trial>> {
    let mut set = JoinSet::new();
    let mut pending = Vec::new();
    for &s in silences {
        let opener = opener.clone();
        let silence = Duration::from_secs_f64(s);
        let h = set.spawn(async move { trial(&opener, silence, reply, None).await });
        pending.push((h.id(), s, h));
    }
    let mut trials = Vec::new();
    let mut earliest_kill = f64::INFINITY;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
    loop {
        let joined = tokio::select! {
            j = set.join_next_with_id() => j,
            _ = tick.tick() => {
                let longest = pending.iter().map(|p| p.1).fold(0.0, f64::max);
                say(format!("waiting: {} connections silent, the longest for {} s", pending.len(), fmt_secs(longest)));
                continue;
            }
        };
        let Some(joined) = joined else { break };
        match joined {
            Ok((id, result)) => {
                pending.retain(|p| p.0 != id);
                let t = result?;
                match t.outcome {
                    "alive" => say(format!(
                        "  {} s: alive (answer in {:.1} ms)",
                        fmt_secs(t.silence_s),
                        t.answer_ms.unwrap_or(0.0)
                    )),
                    _ => say(format!(
                        "  {} s: dead: {}{}",
                        fmt_secs(t.silence_s),
                        t.expiry.map_or("?".into(), |e| e.to_string()),
                        if t.during_silence {
                            format!(
                                " after {} s of silence, before the ping",
                                fmt_secs(t.killed_at_s.unwrap_or(0.0))
                            )
                        } else if t.expiry == Some(Expiry::Silent) {
                            " (no answer to the ping, no FIN or RST)".into()
                        } else {
                            " in answer to the ping".into()
                        }
                    )),
                }
                if let Some(k) = t.kill_time() {
                    if k < earliest_kill {
                        earliest_kill = k;
                        // Longer silences would be killed too: stop waiting for them.
                        for p in pending.iter().filter(|p| p.1 >= k) {
                            p.2.abort();
                        }
                    }
                }
                trials.push(t);
            }
            Err(e) if e.is_cancelled() => {
                let id = e.id();
                if let Some(i) = pending.iter().position(|p| p.0 == id) {
                    let (_, s, _) = pending.remove(i);
                    trials.push(Trial::abandoned(Duration::from_secs_f64(s)));
                }
            }
            Err(e) => anyhow::bail!("a probe connection failed: {e}"),
        }
    }
    trials.sort_by(|a, b| a.silence_s.total_cmp(&b.silence_s));
    Ok(trials)
}

/// One connection: open it, stay silent, ping, and see what happens.
async fn trial(
    opener: &Opener,
    silence: Duration,
    reply: Duration,
    keepalive: Option<Duration>,
) -> anyhow::Result<Trial> {
    let (mut c, rtt) = opener.open(keepalive).await?;
    let t0 = Instant::now();
    let mut t = Trial {
        silence_s: round3(silence.as_secs_f64()),
        outcome: "alive",
        expiry: None,
        killed_at_s: None,
        during_silence: false,
        answer_ms: None,
        detail: None,
        server_spoke: false,
        rtt,
    };
    let end_of_silence = tokio::time::Instant::from_std(t0 + silence);
    let killed = |t: &mut Trial, kind: Expiry, detail: Option<String>, during: bool| {
        t.outcome = "killed";
        t.expiry = Some(kind);
        t.detail = detail;
        t.during_silence = during;
        t.killed_at_s = Some(round3(t0.elapsed().as_secs_f64()));
    };
    // The silence, watching for the path's own FIN or RST.
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end_of_silence) => break,
            ev = c.recv() => match ev {
                Event::Answer | Event::Data => t.server_spoke = true,
                Event::Ended(kind, detail) => {
                    let detail = fin_then_rst(&c, kind, detail).await;
                    killed(&mut t, kind, detail, true);
                    return Ok(t);
                }
                Event::Failed(e) => anyhow::bail!("{}: {e}", opener.target.url),
            }
        }
    }
    let sent = Instant::now();
    if let Err(ev) = c.ping().await {
        match ev {
            Event::Ended(kind, detail) => {
                killed(&mut t, kind, detail, false);
                return Ok(t);
            }
            Event::Failed(e) => anyhow::bail!("{}: sending the ping: {e}", opener.target.url),
            _ => unreachable!("ping errors are endings or failures"),
        }
    }
    let deadline = tokio::time::Instant::from_std(sent + reply);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                let detail = match c.tcp_info() {
                    Some(i) if i.unacked == 0 => format!(
                        "no answer within {} s and no FIN or RST; the ping was acknowledged by TCP, so something on the path holds the connection open but no longer forwards",
                        fmt_secs(reply.as_secs_f64())
                    ),
                    Some(i) => format!(
                        "no answer within {} s and no FIN or RST; {} segments unacknowledged, {} retransmissions: the path drops the packets",
                        fmt_secs(reply.as_secs_f64()), i.unacked, i.retransmits
                    ),
                    None => format!("no answer within {} s and no FIN or RST", fmt_secs(reply.as_secs_f64())),
                };
                killed(&mut t, Expiry::Silent, Some(detail), false);
                return Ok(t);
            }
            ev = c.recv() => match ev {
                Event::Answer => {
                    t.answer_ms = Some(round3(sent.elapsed().as_secs_f64() * 1000.0));
                    return Ok(t);
                }
                Event::Data => t.server_spoke = true,
                Event::Ended(kind, detail) => {
                    let detail = fin_then_rst(&c, kind, detail).await;
                    killed(&mut t, kind, detail, false);
                    return Ok(t);
                }
                Event::Failed(e) => anyhow::bail!("{}: {e}", opener.target.url),
            }
        }
    }
}

/// After a FIN, a RST may follow at once (HAProxy with `option nolinger`): say so.
async fn fin_then_rst(c: &conn::Conn, kind: Expiry, detail: Option<String>) -> Option<String> {
    if kind != Expiry::Fin {
        return detail;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    if c.rst_after_fin() {
        Some(match detail {
            Some(d) => format!("{d}, then a RST"),
            None => "a FIN, then a RST".into(),
        })
    } else {
        detail
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Seconds for people: 3, 2.44, 0.125, 900.
pub fn fmt_secs(s: f64) -> String {
    let digits = if s >= 100.0 {
        0
    } else if s >= 10.0 {
        1
    } else if s >= 1.0 {
        2
    } else {
        3
    };
    let t = format!("{s:.digits$}");
    if t.contains('.') {
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(silence: f64, outcome: &'static str, at: Option<f64>, during: bool) -> Trial {
        Trial {
            silence_s: silence,
            outcome,
            expiry: (outcome == "killed").then_some(Expiry::Fin),
            killed_at_s: at,
            during_silence: during,
            answer_ms: None,
            detail: None,
            server_spoke: false,
            rtt: Duration::from_micros(100),
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn targets() {
        let t: Target = "ws://127.0.0.1:8080/ws".parse().unwrap();
        assert_eq!(
            (t.scheme, t.host.as_str(), t.port),
            (Scheme::Ws, "127.0.0.1", 8080)
        );
        let t: Target = "wss://localhost/sip".parse().unwrap();
        assert_eq!((t.scheme, t.port), (Scheme::Wss, 443));
        let t: Target = "tcp://[::1]:7".parse().unwrap();
        assert_eq!((t.scheme, t.host.as_str(), t.port), (Scheme::Tcp, "::1", 7));
        assert!("tcp://127.0.0.1".parse::<Target>().is_err());
        assert!("http://127.0.0.1:80/".parse::<Target>().is_err());
    }

    #[test]
    fn first_round_is_geometric_and_spans_the_range() {
        let s = plan_silences(1.0, 900.0, 8, true);
        assert_eq!(s.len(), 8);
        assert!((s[0] - 1.0).abs() < 1e-9 && (s[7] - 900.0).abs() < 1e-6);
        assert!(s
            .windows(2)
            .all(|w| (w[1] / w[0] - s[1] / s[0]).abs() < 1e-9));
        let s = plan_silences(2.0, 3.0, 4, false);
        assert_eq!(s, vec![2.2, 2.4, 2.6, 2.8]);
    }

    #[test]
    fn narrowing_keeps_longest_survivor_and_shortest_kill() {
        let trials = [
            trial(1.0, "alive", None, false),
            trial(2.44, "alive", None, false),
            trial(3.28, "killed", Some(4.8), false),
            trial(4.42, "killed", Some(5.9), false),
            trial(5.94, "abandoned", None, false),
        ];
        assert_eq!(narrow(0.0, None, &trials), (2.44, Some(3.28)));
    }

    #[test]
    fn a_timer_close_bounds_both_sides() {
        let trials = [
            trial(2.44, "alive", None, false),
            trial(3.28, "killed", Some(3.001), true),
            trial(4.42, "killed", Some(3.002), true),
        ];
        let (lo, hi) = narrow(0.0, None, &trials);
        assert_eq!(hi, Some(3.001));
        assert!((lo - (3.001 - 0.0102)).abs() < 1e-9, "{lo}");
    }

    #[test]
    fn nothing_killed_leaves_no_upper_bound() {
        let trials = [
            trial(1.0, "alive", None, false),
            trial(8.0, "alive", None, false),
        ];
        assert_eq!(narrow(0.0, None, &trials), (8.0, None));
    }
}

//! Drives the stages over one capture: capture -> decode -> tcp.
//!
//! Errors in the middle of a file do not lose what was read before them: the connections seen so
//! far are returned together with the error.

use std::path::Path;

use serde::Serialize;

use crate::capture::{CaptureReader, Format, Timestamp, Warning};
use crate::decode::{decode, Decoded};
use crate::i18n::Msg;
use crate::tcp::{Connection, Tracker, TrackerOptions};

/// What a capture held, for the capture summary of every report.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct CaptureSummary {
    pub path: String,
    pub format: Format,
    pub gzip: bool,
    pub packets: u64,
    pub first_ts: Option<Timestamp>,
    pub last_ts: Option<Timestamp>,
    pub link_types: Vec<String>,
    /// Frames that were not IP (ARP, ...).
    pub not_ip: u64,
    /// Frames too short or inconsistent to decode.
    pub malformed: u64,
    pub ip_fragments: u64,
    /// Frames a `--filter` left out.
    pub filtered_out: u64,
    // Non-fatal problems: each is its English line in the JSON document.
    #[schemars(with = "Vec<String>")]
    pub warnings: Vec<Warning>,
}

/// One capture, read to its end (or to its first fatal error).
pub struct CaptureFlows {
    pub summary: CaptureSummary,
    /// Boxed as the tracker made them (`Tracker::done`): each summary took the place its live
    /// state left, where one list of them inline needed fresh pages for all at the end.
    pub connections: Vec<Box<Connection>>,
    /// A fatal error that stopped reading; what came before it is still above.
    pub error: Option<anyhow::Error>,
}

/// Reads one capture and tracks its connections. Only opening the file is an `Err`; a file that
/// breaks later yields what was read plus `error`.
pub fn track_capture(path: &Path) -> anyhow::Result<CaptureFlows> {
    track_capture_with(path, TrackerOptions::default())
}

/// `track_capture` with tracker options (application events kept for `--detail`, caps).
pub fn track_capture_with(path: &Path, opts: TrackerOptions) -> anyhow::Result<CaptureFlows> {
    track_capture_filtered(path, opts, None)
}

/// `track_capture_with` keeping only the frames a BPF expression accepts (`--filter`, with
/// `--features libpcap`). Without that feature a filter is an error. Connections are sorted by
/// start time (then first frame).
pub fn track_capture_filtered(
    path: &Path,
    opts: TrackerOptions,
    filter: Option<&str>,
) -> anyhow::Result<CaptureFlows> {
    let (run, connections) = read_capture(path, opts, filter, None)?;
    Ok(CaptureFlows {
        summary: run.summary,
        connections,
        error: run.error,
    })
}

/// What `stream_capture` returns once the capture is read: everything but the connections.
pub struct CaptureRun {
    pub summary: CaptureSummary,
    /// A fatal error that stopped reading; the connections seen before it were emitted.
    pub error: Option<anyhow::Error>,
}

/// Reads one capture and hands each connection to `emit` as soon as it is summarised: when it
/// has ended and stayed quiet (Zeek's conn.log order), or at the end of the capture. Nothing is
/// kept, so memory follows the connections alive at a time, not the length of the capture.
/// `emit` also gets the capture time at which the connection was handed over (the packet that
/// made it due, or the last packet of the capture): what `merge_streams` orders captures by.
pub fn stream_capture(
    path: &Path,
    opts: TrackerOptions,
    filter: Option<&str>,
    mut emit: impl FnMut(Timestamp, Connection),
) -> anyhow::Result<CaptureRun> {
    read_capture(path, opts, filter, Some(&mut emit)).map(|(run, _)| run)
}

/// Several captures streamed at once, one thread per file, merged by the capture time at which
/// each connection was handed over (ties: the order of `paths`). Each thread is at most
/// `AHEAD` connections ahead of the merge, so memory stays bounded too. Returns each capture's
/// run, in the order of `paths`.
pub fn merge_streams(
    paths: &[std::path::PathBuf],
    opts: TrackerOptions,
    filter: Option<&str>,
    mut emit: impl FnMut(Connection),
) -> Vec<anyhow::Result<CaptureRun>> {
    const AHEAD: usize = 1024;
    if let [path] = paths {
        // One capture: no thread and no channel (their hand-off cost ~10 % on 2 GB).
        return vec![stream_capture(path, opts, filter, |_, c| emit(c))];
    }
    std::thread::scope(|scope| {
        let (handles, receivers): (Vec<_>, Vec<_>) = paths
            .iter()
            .map(|path| {
                let (tx, rx) = std::sync::mpsc::sync_channel::<(Timestamp, Connection)>(AHEAD);
                let h = scope.spawn(move || {
                    stream_capture(path, opts, filter, |ts, c| {
                        // The merge stopped early only if the receiver is gone; nothing to do.
                        let _ = tx.send((ts, c));
                    })
                });
                (h, rx)
            })
            .unzip();
        // The next connection of each capture; None once its thread is done.
        let mut heads: Vec<Option<(Timestamp, Connection)>> =
            receivers.iter().map(|r| r.recv().ok()).collect();
        while let Some(i) = heads
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.as_ref().map(|(ts, _)| (*ts, i)))
            .min()
            .map(|(_, i)| i)
        {
            let (_, c) = heads[i].take().expect("a head");
            emit(c);
            heads[i] = receivers[i].recv().ok();
        }
        handles.into_iter().map(joined).collect()
    })
}

/// The one reading loop: with `emit`, connections are handed over as they end; without, the
/// tracker keeps them (within `max_summaries`) and they come back sorted by start time.
#[allow(clippy::vec_box)] // the tracker's boxed summaries (`Tracker::done`), handed on
fn read_capture(
    path: &Path,
    opts: TrackerOptions,
    filter: Option<&str>,
    mut emit: Option<&mut dyn FnMut(Timestamp, Connection)>,
) -> anyhow::Result<(CaptureRun, Vec<Box<Connection>>)> {
    #[cfg(feature = "libpcap")]
    let mut bpf = filter.map(crate::filter::BpfFilter::new).transpose()?;
    #[cfg(not(feature = "libpcap"))]
    if let Some(f) = filter {
        anyhow::bail!("--filter '{f}': this build has no libpcap (build with --features libpcap)");
    }
    let mut reader = CaptureReader::open(path)?;
    let name = path.display().to_string();
    let file_bytes = std::fs::metadata(path).map_or(0, |m| m.len());
    let bar = crate::progress::for_file(&name, (!reader.gzip).then_some(file_bytes), file_bytes);
    // Connections end (and are handed to `emit`) in capture order only on one thread.
    let mut tracking = if opts.shards > 1 && emit.is_none() {
        Tracking::Sharded(Shards::start(&name, opts))
    } else {
        Tracking::One(Tracker::with_options(name.clone(), opts))
    };
    let mut summary = CaptureSummary {
        path: name,
        format: reader.format,
        gzip: reader.gzip,
        packets: 0,
        first_ts: None,
        last_ts: None,
        link_types: Vec::new(),
        not_ip: 0,
        malformed: 0,
        ip_fragments: 0,
        filtered_out: 0,
        warnings: Vec::new(),
    };
    let mut first_malformed: Option<(u64, u64, &'static str)> = None;
    let mut out_of_order = 0u64;
    let error = loop {
        match reader.next_frame() {
            Ok(Some(frame)) => {
                summary.packets += 1;
                if let Some(b) = &bar {
                    if summary.packets.is_multiple_of(4096) {
                        b.set_position(frame.offset);
                    }
                }
                if summary.first_ts.is_none() {
                    summary.first_ts = Some(frame.ts);
                }
                if summary.last_ts.is_some_and(|l| frame.ts < l) {
                    out_of_order += 1;
                }
                summary.last_ts = Some(summary.last_ts.map_or(frame.ts, |l| l.max(frame.ts)));
                #[cfg(feature = "libpcap")]
                if let Some(f) = bpf.as_mut() {
                    match f.matches(&frame) {
                        Ok(true) => {}
                        Ok(false) => {
                            summary.filtered_out += 1;
                            continue;
                        }
                        Err(e) => break Some(e),
                    }
                }
                match decode(&frame) {
                    Decoded::Ip(p) => match &mut tracking {
                        Tracking::One(tracker) => {
                            tracker.packet(&frame, &p);
                            if let Some(emit) = emit.as_mut() {
                                if tracker.has_finished() {
                                    let ts = frame.ts;
                                    tracker.drain_finished().for_each(|c| emit(ts, *c));
                                }
                            }
                        }
                        Tracking::Sharded(shards) => shards.packet(&frame, &p),
                    },
                    Decoded::NotIp => summary.not_ip += 1,
                    Decoded::Malformed(why) => {
                        summary.malformed += 1;
                        if first_malformed.is_none() {
                            first_malformed = Some((frame.number, frame.offset, why));
                        }
                    }
                }
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    if let Some(b) = bar {
        b.set_position(reader.bytes_read());
        b.finish_and_clear();
    }
    summary.link_types = reader.link_types.iter().map(|l| l.name()).collect();
    summary.warnings = std::mem::take(&mut reader.warnings);
    if let Some((n, off, why)) = first_malformed {
        summary.warnings.push(Warning::new(
            format!(
                "{} frames could not be decoded; the first is frame {n} at byte {off}: {why}",
                summary.malformed
            ),
            Msg::new("w-malformed")
                .s("n", summary.malformed)
                .s("frame", n)
                .s("offset", off)
                .m("why", malformed_reason(why)),
        ));
    }
    if out_of_order > 0 {
        summary.warnings.push(Warning::new(
            format!("{out_of_order} frames have a timestamp earlier than a frame before them"),
            Msg::new("w-out-of-order").s("n", out_of_order),
        ));
    }
    let tracker = match tracking {
        Tracking::One(tracker) => tracker,
        Tracking::Sharded(shards) => shards.finish(opts, &summary.path)?,
    };
    summary.ip_fragments = tracker.fragments;
    let connections = match emit {
        Some(emit) => {
            let end = summary.last_ts.unwrap_or_default();
            summary
                .warnings
                .extend(tracker.finish_streaming(&mut |c| emit(end, c)));
            Vec::new()
        }
        None => {
            let (connections, warnings) = tracker.finish_with_warnings();
            summary.warnings.extend(warnings);
            connections
        }
    };
    Ok((CaptureRun { summary, error }, connections))
}

/// Asks glibc's malloc for one arena for the whole process. By default each thread that
/// allocates gets an arena of its own (up to 8 per core), and memory freed in one is reused
/// only there: the tracking threads' live connections, freed as they end, stayed resident
/// while the rules allocated their findings in the main thread's arena. On the 200 MB synth,
/// diagnose with two tracking threads peaked at 145 MB with per-thread arenas and 118 MB with
/// one (the same as one thread), at the same speed: the threads allocate per connection, not
/// per packet, so they seldom wait on the arena's lock. Other C libraries: nothing to do.
pub fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator; it is called before any thread of
    // ours starts, and M_ARENA_MAX is one glibc documents (mallopt(3)).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Where `read_capture` hands its packets: one tracker on the reading thread, or shards.
enum Tracking {
    One(Tracker),
    Sharded(Shards),
}

/// One capture tracked on several threads. The reading thread decodes each frame once to find
/// its connection's shard (`tcp::shard_of`), copies it into that shard's next batch, and keeps
/// the one `SweepClock`: a sweep goes to every shard at the point of the capture where a single
/// tracker would have swept, so each shard summarises its connections exactly as that tracker
/// would (`Tracker::merge_shards`). Each shard decodes its frames again (~12 ns a frame, next
/// to ~1 µs of tracking). Memory: the shards' live connections, which are the capture's, plus
/// `QUEUED` batches per shard.
struct Shards {
    clock: crate::tcp::SweepClock,
    batches: Vec<Batch>,
    senders: Vec<std::sync::mpsc::SyncSender<Batch>>,
    /// Batches a shard is done with, emptied, to be filled again: a new 150 kB buffer per
    /// batch, freed on another thread, fragmented the heap (flows on the 200 MB synth: 76 MB
    /// peak instead of 62).
    returned: Vec<std::sync::mpsc::Receiver<Batch>>,
    workers: Vec<std::thread::JoinHandle<Tracker>>,
}

/// Frames in a batch before it is handed over, and batches queued per shard. Measured on the
/// 200 MB synth (flows, two shards): 1024 x 4 held 5 MB of batches (69 MB peak, against 62 on
/// one thread), 512 x 2 about 1 MB (65 MB) at the same speed, 128 x 2 64 MB but 25 % slower
/// (a hand-over per 128 frames).
const BATCH_FRAMES: usize = 512;
const QUEUED: usize = 2;

/// Frames for one shard, in capture order, with the sweeps between them.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    items: Vec<Item>,
}

enum Item {
    Sweep(Timestamp),
    Frame {
        number: u64,
        ts: Timestamp,
        link: crate::capture::LinkType,
        interface: u32,
        orig_len: u32,
        offset: u64,
        at: std::ops::Range<usize>,
    },
}

impl Shards {
    fn start(name: &str, opts: TrackerOptions) -> Self {
        let n = opts.shards;
        let shard_opts = Tracker::shard_options(opts, n);
        let mut senders = Vec::with_capacity(n);
        let mut returned = Vec::with_capacity(n);
        let mut workers = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(QUEUED);
            let (back, back_rx) = std::sync::mpsc::channel::<Batch>();
            let mut tracker = Tracker::with_options(name.to_string(), shard_opts);
            senders.push(tx);
            returned.push(back_rx);
            workers.push(std::thread::spawn(move || {
                for mut batch in rx {
                    for item in &batch.items {
                        match item {
                            Item::Sweep(now) => tracker.sweep_now(*now),
                            Item::Frame {
                                number,
                                ts,
                                link,
                                interface,
                                orig_len,
                                offset,
                                at,
                            } => {
                                let frame = crate::capture::Frame {
                                    number: *number,
                                    ts: *ts,
                                    link: *link,
                                    interface: *interface,
                                    orig_len: *orig_len,
                                    offset: *offset,
                                    data: &batch.bytes[at.clone()],
                                };
                                // The reader decoded it as IP already.
                                if let Decoded::Ip(p) = decode(&frame) {
                                    tracker.packet_unswept(&frame, &p);
                                }
                            }
                        }
                    }
                    batch.bytes.clear();
                    batch.items.clear();
                    // The reader may have stopped taking them back (it is finishing).
                    let _ = back.send(batch);
                }
                // The shards summarise their last live connections side by side.
                tracker.summarise_live();
                tracker
            }));
        }
        Shards {
            clock: crate::tcp::SweepClock::new(),
            batches: (0..n).map(|_| Batch::default()).collect(),
            senders,
            returned,
            workers,
        }
    }

    fn packet(&mut self, frame: &crate::capture::Frame<'_>, p: &crate::decode::Packet<'_>) {
        if self.clock.tick(frame.ts) {
            for i in 0..self.batches.len() {
                self.batches[i].items.push(Item::Sweep(frame.ts));
                self.send_if_full(i);
            }
        }
        let i = crate::tcp::shard_of(p, self.batches.len());
        let b = &mut self.batches[i];
        let start = b.bytes.len();
        b.bytes.extend_from_slice(frame.data);
        b.items.push(Item::Frame {
            number: frame.number,
            ts: frame.ts,
            link: frame.link,
            interface: frame.interface,
            orig_len: frame.orig_len,
            offset: frame.offset,
            at: start..b.bytes.len(),
        });
        self.send_if_full(i);
    }

    fn send_if_full(&mut self, i: usize) {
        if self.batches[i].items.len() >= BATCH_FRAMES {
            self.send(i);
        }
    }

    fn send(&mut self, i: usize) {
        let empty = self.returned[i].try_recv().unwrap_or_default();
        let b = std::mem::replace(&mut self.batches[i], empty);
        // A shard that has stopped (it panicked) shows when it is joined.
        let _ = self.senders[i].send(b);
    }

    /// Hands over what is left, waits for every shard, and merges what they tracked. A shard
    /// that panicked (a bug) makes it an error naming the capture.
    fn finish(mut self, opts: TrackerOptions, name: &str) -> anyhow::Result<Tracker> {
        for i in 0..self.batches.len() {
            self.send(i);
        }
        self.senders.clear();
        let mut trackers = Vec::with_capacity(self.workers.len());
        for w in self.workers {
            trackers.push(
                w.join()
                    .map_err(|_| anyhow::anyhow!("{name}: a tracking thread panicked"))?,
            );
        }
        Ok(Tracker::merge_shards(trackers, opts))
    }
}

/// A capture named after the point where it was taken: `agent=a.pcapng`, or a bare path, which
/// is named after its file stem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VantageSpec {
    pub name: String,
    pub path: std::path::PathBuf,
}

impl std::str::FromStr for VantageSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        // `NAME=PATH`, unless what precedes `=` looks like a path.
        if let Some((name, path)) = s.split_once('=') {
            if !name.is_empty() && !name.contains('/') && !name.contains('\\') {
                if path.is_empty() {
                    return Err(format!("{s}: no capture file after '='"));
                }
                return Ok(VantageSpec {
                    name: name.to_string(),
                    path: path.into(),
                });
            }
        }
        let path = std::path::PathBuf::from(s);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .map(|n| {
                // a.pcap.gz -> a
                let n = n.strip_suffix(".gz").unwrap_or(&n).to_string();
                match n.rsplit_once('.') {
                    Some((stem, _)) if !stem.is_empty() => stem.to_string(),
                    _ => n,
                }
            })
            .ok_or_else(|| format!("{s}: not a file name"))?;
        Ok(VantageSpec { name, path })
    }
}

/// Reads every vantage's capture (one thread per file: decoding is independent per capture).
/// Returns the vantages read and the errors met, each naming its file.
pub fn read_vantages(specs: &[VantageSpec]) -> (Vec<crate::align::Vantage>, Vec<anyhow::Error>) {
    read_vantages_with(specs, TrackerOptions::default())
}

/// `read_vantages` with tracker options (caps).
pub fn read_vantages_with(
    specs: &[VantageSpec],
    opts: TrackerOptions,
) -> (Vec<crate::align::Vantage>, Vec<anyhow::Error>) {
    read_vantages_filtered(specs, opts, None)
}

/// `read_vantages_with` with a BPF filter on every capture.
pub fn read_vantages_filtered(
    specs: &[VantageSpec],
    opts: TrackerOptions,
    filter: Option<&str>,
) -> (Vec<crate::align::Vantage>, Vec<anyhow::Error>) {
    // The tracking threads are shared among the captures.
    let opts = TrackerOptions {
        shards: (opts.shards / specs.len().max(1)).max(1),
        ..opts
    };
    let results: Vec<anyhow::Result<CaptureFlows>> = if let [s] = specs {
        // One capture is read on this thread. Its connections are freed (live state) and
        // allocated (summaries, then the rules' findings) in the same malloc arena: read on a
        // thread of its own, glibc gives that thread a second arena whose freed memory the
        // rules on the main thread cannot reuse (p200 diagnose: 129 -> 114 MB peak RSS).
        vec![std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            track_capture_filtered(&s.path, opts, filter)
        }))
        .unwrap_or_else(|_| Err(anyhow::anyhow!("a reader thread panicked")))]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = specs
                .iter()
                .map(|s| scope.spawn(move || track_capture_filtered(&s.path, opts, filter)))
                .collect();
            handles.into_iter().map(joined).collect()
        })
    };
    let mut vantages = Vec::new();
    let mut errors = Vec::new();
    for (spec, r) in specs.iter().zip(results) {
        match r {
            Ok(mut flows) => {
                if let Some(e) = flows.error.take() {
                    errors.push(e);
                }
                vantages.push(crate::align::Vantage {
                    name: spec.name.clone(),
                    flows,
                });
            }
            Err(e) => errors.push(e),
        }
    }
    (vantages, errors)
}

/// A reader thread's result; a panic in it is an error like the others, not the end of the run.
fn joined<T>(h: std::thread::ScopedJoinHandle<'_, anyhow::Result<T>>) -> anyhow::Result<T> {
    h.join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("a reader thread panicked")))
}

/// The catalog message for a decoder's reason (decode.rs keeps plain `&'static str` reasons).
fn malformed_reason(why: &'static str) -> Msg {
    let key = match why {
        "IP header invalid or cut short" => "w-why-ip",
        "TCP header invalid or cut short" => "w-why-tcp",
        "UDP header invalid or cut short" => "w-why-udp",
        "ethernet header cut short" => "w-why-ethernet",
        "SLL header cut short" => "w-why-sll",
        "SLL2 header cut short" => "w-why-sll2",
        "loopback header cut short" => "w-why-loopback",
        "unsupported link type" => "w-why-link",
        _ => return Msg::new("w-why-other").s("why", why),
    };
    Msg::new(key)
}

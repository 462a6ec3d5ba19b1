//! Drives the stages over one capture: capture -> decode -> tcp.
//!
//! Errors in the middle of a file do not lose what was read before them: the connections seen so
//! far are returned together with the error.

use std::path::Path;

use serde::Serialize;

use crate::capture::{CaptureReader, Format, Frame, LinkType, Timestamp, Warning};
use crate::decode::{decode, Decoded};
use crate::i18n::Msg;
use crate::tcp::{ConnKey, Connection, Seen, StreamTag, Tracker, TrackerOptions};

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
    /// With `TrackerOptions::digest` (a one-capture diagnosis): the connections no rule ends,
    /// as digests, sorted as `connections` is. `align` lines them up with the others.
    pub digests: crate::tcp::Digests,
    /// A fatal error that stopped reading; what came before it is still above.
    pub error: Option<anyhow::Error>,
    /// What lining captures up reads of each connection (`connections`, then `digests`), where
    /// the connections are in a file and only their digests in memory
    /// (`CaptureFlows::keep_in_file`); empty otherwise, and `align` reads the connections.
    pub views: Vec<crate::align::View>,
    /// Tracked on threads of its own: split among several (`read_sharded`), or one of several
    /// captures (`read_vantages_filtered`), rather than on the thread that asked. Where
    /// `after_tracking` runs what follows.
    pub tracked_on_threads: bool,
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
    let (run, (connections, digests), sharded) = read_capture(path, opts, filter, None)?;
    Ok(CaptureFlows {
        summary: run.summary,
        connections,
        digests,
        error: run.error,
        views: Vec::new(),
        tracked_on_threads: sharded,
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
    stream_capture_mapped(path, opts, filter, &|c| c, &mut |ts, _, c| emit(ts, c))
}

/// `stream_capture`, each connection turned into what `emit` takes by `map` on the thread
/// that tracked it: with several tracking threads (`TrackerOptions::shards`), `flows` renders
/// its lines side by side there, and each connection is freed where it was made, instead of
/// one thread doing both for all of them after the merge. `emit`'s flag: the connection was
/// still live at the capture's end (`StreamTag::at_end`); those come last, in start order.
pub fn stream_capture_mapped<R: Send>(
    path: &Path,
    opts: TrackerOptions,
    filter: Option<&str>,
    map: &(dyn Fn(Connection) -> R + Sync),
    emit: &mut dyn FnMut(Timestamp, bool, R),
) -> anyhow::Result<CaptureRun> {
    if shardable(path, opts)? {
        return stream_sharded(path, opts, filter, map, emit);
    }
    let mut emit = |ts, at_end, c| emit(ts, at_end, map(c));
    read_capture(path, opts, filter, Some(&mut emit)).map(|(run, ..)| run)
}

/// Several captures streamed at once, one thread per file, merged by the capture time at which
/// each connection was handed over (ties: the order of `paths`). Each thread is at most
/// `AHEAD` connections ahead of the merge (`batch_channel`), so memory stays bounded too.
/// `emit` gets each connection with the index of its capture in `paths`. Returns each
/// capture's run, in the order of `paths`.
pub fn merge_streams(
    paths: &[std::path::PathBuf],
    opts: TrackerOptions,
    filter: Option<&str>,
    mut emit: impl FnMut(usize, Connection),
) -> Vec<anyhow::Result<CaptureRun>> {
    merge_streams_mapped(paths, opts, filter, &|c| c, |i, _, c| emit(i, c))
}

/// `merge_streams`, each connection turned into what `emit` takes by `map` on the thread that
/// tracked it (`stream_capture_mapped`, whose flag `emit` gets too: still live at the end of
/// its capture, whose other connections came before it).
pub fn merge_streams_mapped<R: Send>(
    paths: &[std::path::PathBuf],
    opts: TrackerOptions,
    filter: Option<&str>,
    map: &(dyn Fn(Connection) -> R + Sync),
    mut emit: impl FnMut(usize, bool, R),
) -> Vec<anyhow::Result<CaptureRun>> {
    // The tracking threads are shared among the captures, by size.
    let shares = thread_shares(paths.iter().map(|p| p.as_path()), opts.shards);
    if let [path] = paths {
        let opts = TrackerOptions {
            shards: shares[0],
            ..opts
        };
        // One capture: no thread and no channel (their hand-off cost ~10 % on 2 GB).
        return vec![stream_capture_mapped(
            path,
            opts,
            filter,
            map,
            &mut |_, at_end, r| emit(0, at_end, r),
        )];
    }
    std::thread::scope(|scope| {
        let (handles, mut receivers): (Vec<_>, Vec<_>) = paths
            .iter()
            .zip(&shares)
            .map(|(path, &shards)| {
                let opts = TrackerOptions { shards, ..opts };
                let (mut tx, rx) = batch_channel::<(Timestamp, bool, R)>();
                let h = scope.spawn(move || {
                    stream_capture_mapped(path, opts, filter, map, &mut |ts, at_end, r| {
                        tx.send((ts, at_end, r))
                    })
                });
                (h, rx)
            })
            .unzip();
        merge_sorted(
            &mut receivers,
            |(ts, ..)| *ts,
            |i, (_, at_end, r)| emit(i, at_end, r),
        );
        handles
            .into_iter()
            .zip(paths)
            .map(|(h, path)| joined(h, path))
            .collect()
    })
}

/// Reads a capture and tracks its connections. With `emit`, on one thread (several:
/// `stream_sharded`), connections are handed over as they end, in capture order; without, on
/// `opts.shards` threads (`read_sharded`), the tracker keeps them (within `max_summaries`) and
/// they come back sorted by start time.
#[allow(clippy::vec_box)] // the tracker's boxed summaries (`Tracker::done`), handed on
fn read_capture(
    path: &Path,
    opts: TrackerOptions,
    filter: Option<&str>,
    mut emit: Option<&mut dyn FnMut(Timestamp, bool, Connection)>,
) -> anyhow::Result<(CaptureRun, crate::tcp::Kept, bool)> {
    // Streamed on several threads by `stream_capture_mapped`, which calls this otherwise.
    // Returned last: whether the capture was tracked on threads of its own.
    let sharded = emit.is_none() && shardable(path, opts)?;
    let (mut run, tracker) = if sharded {
        read_sharded(path, opts, filter)?
    } else {
        match emit.as_mut() {
            Some(emit) => {
                let mut ended = |_, ts, c| emit(ts, false, c);
                read_frames(path, opts, filter, Some(&mut ended), None)?
            }
            None => read_frames(path, opts, filter, None, None)?,
        }
    };
    let summary = &mut run.summary;
    summary.ip_fragments = tracker.fragments;
    let kept = match emit {
        Some(emit) => {
            let end = summary.last_ts.unwrap_or_default();
            summary
                .warnings
                .extend(tracker.finish_streaming(&mut |at_end, c| emit(end, at_end, c)));
            Default::default()
        }
        None => {
            let (kept, warnings) = tracker.finish_kept();
            summary.warnings.extend(warnings);
            kept
        }
    };
    crate::stats::mark(|| format!("tracked {}", path.display()));
    Ok((run, kept, sharded))
}

/// How many of `threads` tracking threads each capture gets: its share of the captures' bytes,
/// rounded, and at least one. Captures taken at several points of a path are seldom alike: an
/// agent's PC sees its own connection, the softswitch every agent's. Shared out evenly, the
/// largest was tracked on one thread while the others' sat idle once their small captures were
/// read (a 500 MB capture beside a 100 MB one on two threads: 2.90 → 2.62 s, the large one
/// tracked in 1.59 s instead of 1.92; the same report, since a capture's shards summarise what
/// one thread would). The shares may add up to a little more than `threads`, the small
/// captures' threads ending first. A capture whose size cannot be read (a pipe) counts as
/// empty; if every one does, they share evenly, as before.
fn thread_shares<'a>(paths: impl Iterator<Item = &'a Path>, threads: usize) -> Vec<usize> {
    let sizes: Vec<u64> = paths
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .collect();
    let total: u64 = sizes.iter().sum();
    let even = (threads / sizes.len().max(1)).max(1);
    sizes
        .iter()
        .map(|&size| match total {
            0 => even,
            _ => ((threads as f64 * size as f64 / total as f64).round() as usize).max(1),
        })
        .collect()
}

/// Whether a capture is tracked on several threads: `opts.shards` > 1, and each shard can read
/// the file itself: only a regular file can be read more than once (not a pipe: `vantage flows
/// <(zcat x.pcap.gz)`), and a gzip capture would be decompressed once per shard.
fn shardable(path: &Path, opts: TrackerOptions) -> anyhow::Result<bool> {
    Ok(opts.shards > 1
        && std::fs::metadata(path).is_ok_and(|m| m.is_file())
        && !crate::capture::is_gzip_file(path)?)
}

/// One capture tracked on `opts.shards` threads. Each reads and decodes the whole file (3 GB/s
/// and ~12 ns a frame: a small part of tracking's ~1 µs a packet) and tracks only the
/// connections `tcp::shard_of` gives it. Each also sweeps at every IP packet, so its sweeps
/// fall where one tracker's would, and it summarises its connections exactly as that tracker
/// would (`Tracker::merge_shards`). Nothing crosses between the threads until the end. An
/// earlier version had one thread read and hand the frames over in batches: it measured the
/// same on two cores (moving the frames between cores cost what the second read does), and
/// its one reader would have been what eight shards wait on. Tried again in session 32 with
/// the lookahead, a reader dealing each shard its frames in blocks of 512 and a sweep record
/// where its one clock ticked: exact, a few % less CPU, but 0.34-0.37 -> 0.39-0.41 s of wall
/// time on the 200 MB synth, three threads on two cores (benches/RESULTS.md).
fn read_sharded(
    path: &Path,
    opts: TrackerOptions,
    filter: Option<&str>,
) -> anyhow::Result<(CaptureRun, Tracker)> {
    let n = opts.shards;
    let shard_opts = Tracker::shard_options(opts, n);
    let results: Vec<anyhow::Result<(CaptureRun, Tracker)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                scope.spawn(move || {
                    let (run, mut tracker) =
                        read_frames(path, shard_opts, filter, None, Some((i, n)))?;
                    // The shards summarise their last connections side by side.
                    tracker.summarise_live();
                    Ok((run, tracker))
                })
            })
            .collect();
        handles.into_iter().map(|h| joined(h, path)).collect()
    });
    let (run, trackers) = gather(results)?;
    Ok((run, Tracker::merge_shards(trackers, opts)))
}

/// The shards' results: the first one's run (every shard read the same frames, so its summary,
/// warnings and error stand) and every shard's tracker; the first error, if one failed.
fn gather(
    results: Vec<anyhow::Result<(CaptureRun, Tracker)>>,
) -> anyhow::Result<(CaptureRun, Vec<Tracker>)> {
    let mut first = None;
    let mut trackers = Vec::with_capacity(results.len());
    for r in results {
        let (run, tracker) = r?;
        first.get_or_insert(run);
        trackers.push(tracker);
    }
    let run = first.ok_or_else(|| anyhow::anyhow!("no shard ran"))?;
    Ok((run, trackers))
}

/// Merges streams that each arrive in order into one in order, by `key` (ties: the earlier
/// stream first), as they come: each stream's next item waits while the others catch up.
/// `emit` gets each item with the index of its stream.
fn merge_sorted<T, K: Ord>(
    receivers: &mut [BatchRx<T>],
    key: impl Fn(&T) -> K,
    mut emit: impl FnMut(usize, T),
) {
    let mut heads: Vec<Option<T>> = receivers.iter_mut().map(BatchRx::recv).collect();
    while let Some(i) = heads
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.as_ref().map(|x| (key(x), i)))
        .min()
        .map(|(_, i)| i)
    {
        if let Some(x) = heads[i].take() {
            emit(i, x);
        }
        heads[i] = receivers[i].recv();
    }
}

/// How many connections a tracking thread may be ahead of the merge. What is in flight is
/// what `map` made of them (`stream_capture_mapped`): `flows`' rendered lines, ~1.5 KB each
/// on the 200 MB synth, where 1 024 ahead raised the peak by 5 MB and 256 did not.
const AHEAD: usize = 256;
/// Connections per hand-off. One at a time, the merge and the threads woke each other for
/// every connection: in `flows --format json` on the 200 MB synth, the 20 000 connections
/// still live at the end came over in 0.45 s, a quarter of the merging thread's time in futex
/// calls and another 7 % waiting on the allocator's lock.
const BATCH: usize = 64;

/// A bounded channel that carries items `BATCH` at a time, at most `AHEAD` in flight.
fn batch_channel<T>() -> (BatchTx<T>, BatchRx<T>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(AHEAD / BATCH);
    (
        BatchTx {
            tx,
            batch: Vec::with_capacity(BATCH),
        },
        BatchRx {
            rx,
            batch: Vec::new().into_iter(),
        },
    )
}

struct BatchTx<T> {
    tx: std::sync::mpsc::SyncSender<Vec<T>>,
    batch: Vec<T>,
}

impl<T> BatchTx<T> {
    fn send(&mut self, x: T) {
        self.batch.push(x);
        if self.batch.len() >= BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.batch.is_empty() {
            let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
            // The merge stopped early only if the receiver is gone; nothing to do.
            let _ = self.tx.send(batch);
        }
    }
}

/// The last, partial batch goes when the sender does.
impl<T> Drop for BatchTx<T> {
    fn drop(&mut self) {
        self.flush();
    }
}

struct BatchRx<T> {
    rx: std::sync::mpsc::Receiver<Vec<T>>,
    batch: std::vec::IntoIter<T>,
}

impl<T> BatchRx<T> {
    /// The next item; `None` once the sender is gone and everything it sent is taken.
    fn recv(&mut self) -> Option<T> {
        loop {
            if let Some(x) = self.batch.next() {
                return Some(x);
            }
            self.batch = self.rx.recv().ok()?.into_iter();
        }
    }
}

/// `read_sharded` for `stream_capture`: each shard sends its connections as it summarises
/// them, tagged with their place in one tracker's order (`StreamTag`), and they are merged
/// back into that order as they come. Each shard is at most `AHEAD` connections ahead.
fn stream_sharded<R: Send>(
    path: &Path,
    opts: TrackerOptions,
    filter: Option<&str>,
    map: &(dyn Fn(Connection) -> R + Sync),
    emit: &mut dyn FnMut(Timestamp, bool, R),
) -> anyhow::Result<CaptureRun> {
    let n = opts.shards;
    let shard_opts = Tracker::shard_options(opts, n);
    let results: Vec<anyhow::Result<(CaptureRun, Tracker)>> = std::thread::scope(|scope| {
        let (handles, mut receivers): (Vec<_>, Vec<_>) = (0..n)
            .map(|i| {
                let (mut tx, rx) = batch_channel::<(StreamTag, Timestamp, R)>();
                let h = scope.spawn(move || {
                    let mut send = |tag, ts, c| tx.send((tag, ts, map(c)));
                    let (run, mut tracker) =
                        read_frames(path, shard_opts, filter, Some(&mut send), Some((i, n)))?;
                    let end = run.summary.last_ts.unwrap_or_default();
                    tracker.stream_rest(&mut |tag, c| send(tag, end, c));
                    Ok((run, tracker))
                });
                (h, rx)
            })
            .unzip();
        merge_sorted(
            &mut receivers,
            |(tag, _, _)| *tag,
            |_, (tag, ts, r)| emit(ts, tag.at_end(), r),
        );
        handles.into_iter().map(|h| joined(h, path)).collect()
    });
    let (mut run, trackers) = gather(results)?;
    let merged = Tracker::merge_shards(trackers, opts);
    run.summary.ip_fragments = merged.fragments;
    run.summary.warnings.extend(merged.warnings());
    Ok(run)
}

/// The one reading loop. `shard`: (this shard, shards), for `read_sharded`; the first shows
/// the progress bar.
fn read_frames<'e>(
    path: &Path,
    opts: TrackerOptions,
    filter: Option<&str>,
    mut emit: Option<&mut (dyn FnMut(StreamTag, Timestamp, Connection) + 'e)>,
    shard: Option<(usize, usize)>,
) -> anyhow::Result<(CaptureRun, Tracker)> {
    #[cfg(feature = "libpcap")]
    let mut bpf = filter.map(crate::filter::BpfFilter::new).transpose()?;
    #[cfg(not(feature = "libpcap"))]
    if let Some(f) = filter {
        anyhow::bail!("--filter '{f}': this build has no libpcap (build with --features libpcap)");
    }
    let mut reader = CaptureReader::open(path)?;
    // The capture's summary and warnings are the first shard's (`gather`).
    if shard.is_some_and(|(i, _)| i > 0) {
        reader.skip_duplicate_check();
    }
    let name = path.display().to_string();
    let file_bytes = std::fs::metadata(path).map_or(0, |m| m.len());
    let bar = shard
        .is_none_or(|(i, _)| i == 0)
        .then(|| crate::progress::for_file(&name, (!reader.gzip).then_some(file_bytes), file_bytes))
        .flatten();
    let mut tracker = Tracker::with_options(name.clone(), opts);
    if emit.is_some() {
        tracker.tag_stream();
    }
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
    let mut ahead = Lookahead::default();
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
                // Held back or not, the frames are tracked in the order read.
                // Parked connections (`tcp::park`) are not read until their next packet.
                if tracker.connections_in_table() < opts.prefetch_from {
                    while let Some(h) = ahead.pop() {
                        let (sum, first) = (&mut summary, &mut first_malformed);
                        track_held(h, &mut tracker, shard, &mut emit, sum, first);
                    }
                    let (sum, first) = (&mut summary, &mut first_malformed);
                    let decoded = decode(&frame);
                    track_one(
                        &frame,
                        decoded,
                        None,
                        &mut tracker,
                        shard,
                        &mut emit,
                        sum,
                        first,
                    );
                    continue;
                }
                // A held frame is decoded when its turn comes; here, only its connection is
                // read (the whole decode where the fast path does not take it).
                // Its connection's key if it is one of this shard's, and whether it is an IP
                // packet another shard tracks (only swept at, if at all). IP packets that are
                // neither TCP nor UDP are the first shard's (`tcp::shard_of`).
                let (key, other_shard) = match crate::decode::peek_ends(frame.link, frame.data) {
                    Some(ends) => match shard {
                        Some((i, n)) if ConnKey::shard_of_ends(ends, n) != i => (None, true),
                        _ => (Some(ConnKey::of_ends(ends)), false),
                    },
                    None => match decode(&frame) {
                        Decoded::Ip(p) => {
                            let key = ConnKey::of_packet(&p);
                            match shard {
                                Some((i, n)) if key.map_or(0, |k| k.shard(n)) != i => (None, true),
                                _ => (key, false),
                            }
                        }
                        _ => (None, false),
                    },
                };
                let seen = key.map(|key| Seen {
                    key,
                    slot: tracker.prefetch_key(&key),
                });
                if other_shard && !tracker.sweep_may_be_due(frame.ts) {
                    // Nothing to do at it, however the frames held before it go.
                    continue;
                }
                if !other_shard {
                    ahead.prefetch_deeper(&tracker);
                }
                // Until this frame fits: for one of this shard's, the oldest of its own
                // tracked and the others' before it swept at.
                while ahead.is_full(other_shard) {
                    let Some(h) = ahead.pop() else { break };
                    let (sum, first) = (&mut summary, &mut first_malformed);
                    track_held(h, &mut tracker, shard, &mut emit, sum, first);
                }
                ahead.push(&frame, seen, other_shard);
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    while let Some(h) = ahead.pop() {
        track_held(
            h,
            &mut tracker,
            shard,
            &mut emit,
            &mut summary,
            &mut first_malformed,
        );
    }
    // Every frame read, the connections still live not yet summarised: the resident size here
    // is theirs (and the peak, on a long capture, is usually here), so their count goes with it
    // (issue 8 asks memory to grow with live connections only).
    crate::stats::mark(|| {
        let (live, peak) = (tracker.live_connections(), tracker.peak_live);
        let parked = tracker.parked_connections();
        let live = format!("{live} live ({parked} parked), peak {}", peak.max(live));
        match shard {
            Some((i, n)) => format!("read {} (shard {}/{n}: {live})", path.display(), i + 1),
            None => format!("read {} ({live})", path.display()),
        }
    });
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
    Ok((CaptureRun { summary, error }, tracker))
}

/// Frames held back while the CPU fetches what tracking them will read. A packet's connection
/// is in memory the cache cannot hold once connections are many (20 000 live: ~2 KB each, the
/// L3 is 32 MB on the EPYC this was measured on), and each level of it is found through the
/// one before: the table's slot, then the connection, then its application state, then the
/// WebSocket state. Read one after the other, those misses were half the time of a diagnosis
/// (a capture of 1 000 connections ran in half the time of one of 20 000, the same size). A
/// frame waits `HELD` frames; each frame tracked meanwhile asks for one more level of each
/// waiting frame's state (`Tracker::prefetch_key`, `Tracker::prefetch_deeper`), so it is in the
/// cache when its turn comes. Frames are tracked in the order read.
///
/// A shard (`--threads`) reads every frame and only sweeps at another shard's (`Held::
/// other_shard`), and holds one only if a sweep may fall at it (`Tracker::sweep_may_be_due`:
/// about one a second of capture time). Those cost next to nothing, so they do not count as a
/// level: they wait in the ring between this shard's frames (up to `RING` of them). Counted,
/// when every other frame was held, half of a two-shard diagnosis's lookahead was gone, and
/// its prefetches' next levels stalled on lines not yet fetched (a third of the read loop's
/// samples, `perf`).
#[derive(Default)]
struct Lookahead {
    held: [Held; RING],
    /// Index of the oldest, how many wait, and how many of those this shard tracks.
    start: usize,
    len: usize,
    own: usize,
}

/// Levels fetched ahead: the connection, its application state, the WebSocket state, and the
/// WebSocket frame counts `flows --format json` and the HTML report keep (a box the WebSocket
/// state points to: counting a frame in it was 6 % of `flows --format json`'s time, one
/// instruction, in `perf`; a fourth frame held costs a diagnosis nothing measurable).
const HELD: usize = 4;

/// Frames the ring holds at most, this shard's (`HELD`) and others' between them. A power of
/// two: a place in it is a mask.
const RING: usize = 32;

/// `i % RING`: a place in the ring.
#[inline]
fn wrap(i: usize) -> usize {
    i & (RING - 1)
}

impl Lookahead {
    /// Whether a frame must be tracked before `f` is held: `HELD` of this shard's wait and `f`
    /// is one too (`other_shard` false), or the ring is full.
    fn is_full(&self, other_shard: bool) -> bool {
        (!other_shard && self.own == HELD) || self.len == RING
    }

    /// The next level of each waiting frame's state: the newest's application state, the one
    /// before's WebSocket state, the one before that's frame counts (the oldest has all it
    /// needs). Only this shard's frames count (others' are neither fetched nor levels).
    fn prefetch_deeper(&self, tracker: &Tracker) {
        let mut age = 0;
        for back in 0..self.len {
            if age == HELD - 1 {
                break;
            }
            let h = &self.held[wrap(self.start + self.len - 1 - back)];
            if h.other_shard {
                continue;
            }
            if let Some(slot) = h.seen.and_then(|s| s.slot) {
                tracker.prefetch_deeper(slot, age as u8 + 1);
            }
            age += 1;
        }
    }

    /// Copies `f` in (only its time and number if another shard tracks it); the caller has
    /// made room (`is_full`).
    fn push(&mut self, f: &Frame<'_>, seen: Option<Seen>, other_shard: bool) {
        debug_assert!(!self.is_full(other_shard));
        let h = &mut self.held[wrap(self.start + self.len)];
        h.seen = seen;
        h.other_shard = other_shard;
        h.number = f.number;
        h.ts = f.ts;
        h.link = f.link;
        h.interface = f.interface;
        h.orig_len = f.orig_len;
        h.offset = f.offset;
        h.data.clear();
        if !other_shard {
            h.data.extend_from_slice(f.data);
        }
        self.len += 1;
        self.own += usize::from(!other_shard);
    }

    /// The oldest frame, taken out (its bytes stay, for the next `push` to reuse).
    fn pop(&mut self) -> Option<&Held> {
        if self.len == 0 {
            return None;
        }
        let h = &self.held[self.start];
        self.start = wrap(self.start + 1);
        self.len -= 1;
        self.own -= usize::from(!h.other_shard);
        Some(h)
    }
}

/// A frame copied out of the reader's buffer, and its connection's key and slot in the tracker.
#[derive(Default)]
struct Held {
    seen: Option<Seen>,
    /// An IP packet another shard tracks: no bytes copied, a sweep only.
    other_shard: bool,
    number: u64,
    ts: Timestamp,
    link: LinkType,
    interface: u32,
    orig_len: u32,
    offset: u64,
    data: Vec<u8>,
}

impl Held {
    fn frame(&self) -> Frame<'_> {
        Frame {
            number: self.number,
            ts: self.ts,
            link: self.link,
            interface: self.interface,
            orig_len: self.orig_len,
            offset: self.offset,
            data: &self.data,
        }
    }
}

/// Tracks one decoded frame: the tracker, the streaming output, the summary's counts.
#[allow(clippy::too_many_arguments)]
fn track_one(
    frame: &Frame<'_>,
    decoded: Decoded<'_>,
    seen: Option<Seen>,
    tracker: &mut Tracker,
    shard: Option<(usize, usize)>,
    emit: &mut Option<&mut (dyn FnMut(StreamTag, Timestamp, Connection) + '_)>,
    summary: &mut CaptureSummary,
    first_malformed: &mut Option<(u64, u64, &'static str)>,
) {
    match decoded {
        Decoded::Ip(p) => {
            tracker.sweep(frame);
            // A frame the lookahead looked up is this shard's (others' are only swept at).
            if shard.is_none_or(|(i, n)| seen.is_some() || crate::tcp::shard_of(&p, n) == i) {
                tracker.packet_seen(frame, &p, seen);
            }
            // Checked here: a diagnosis streams nothing, and the call to learn it was a call a
            // packet (~1 % of its instructions).
            if emit.is_some() {
                emit_finished(frame, tracker, emit);
            }
        }
        Decoded::NotIp => summary.not_ip += 1,
        Decoded::Malformed(why) => {
            summary.malformed += 1;
            if first_malformed.is_none() {
                *first_malformed = Some((frame.number, frame.offset, why));
            }
        }
    }
}

/// A frame the reader held back (`Lookahead`): decoded from its copy (its connection was
/// only looked up when it was read), or, for another shard's packet, only swept at.
// Inlined into the read loop, with the decode it makes (a frame's `Packet` no longer goes
// through a call): -1.0 % instructions on the 200 MB synth, cachegrind.
#[inline]
fn track_held(
    h: &Held,
    tracker: &mut Tracker,
    shard: Option<(usize, usize)>,
    emit: &mut Option<&mut (dyn FnMut(StreamTag, Timestamp, Connection) + '_)>,
    summary: &mut CaptureSummary,
    first_malformed: &mut Option<(u64, u64, &'static str)>,
) {
    let frame = h.frame();
    if h.other_shard {
        sweep_only(&frame, tracker, emit);
    } else {
        track_one(
            &frame,
            decode(&frame),
            h.seen,
            tracker,
            shard,
            emit,
            summary,
            first_malformed,
        );
    }
}

/// An IP packet another shard tracks: this one only sweeps at it (`track_one`).
fn sweep_only(
    frame: &Frame<'_>,
    tracker: &mut Tracker,
    emit: &mut Option<&mut (dyn FnMut(StreamTag, Timestamp, Connection) + '_)>,
) {
    tracker.sweep(frame);
    emit_finished(frame, tracker, emit);
}

/// Streaming: the connections the packet (or its sweep) finished, handed over.
fn emit_finished(
    frame: &Frame<'_>,
    tracker: &mut Tracker,
    emit: &mut Option<&mut (dyn FnMut(StreamTag, Timestamp, Connection) + '_)>,
) {
    if let Some(emit) = emit.as_mut() {
        if tracker.has_finished() {
            let ts = frame.ts;
            for (tag, c) in tracker.drain_finished_tagged() {
                emit(tag, ts, *c);
            }
        }
    }
}

/// Asks glibc's malloc for two arenas for the whole process: the main thread's and one more,
/// which the tracking threads share with it (glibc hands out arenas round-robin once the cap
/// is reached). By default each thread that allocates gets an arena of its own (up to 8 per
/// core), and memory freed in one is reused only there: the tracking threads' live
/// connections, freed as they end, stayed resident while the rules allocated their findings in
/// the main thread's arena. With one arena, the threads waited on its lock (futex wake-ups in
/// the profile: a connection makes ~70 allocations). Measured on the 2-vCPU VM, diagnose with
/// two tracking threads (benches/RESULTS.md):
///
/// | arenas | 200 MB synth | 2 GB synth | two 100 MB captures |
/// |---|---|---|---|
/// | 1 | 1.27 s, 88 MB | 12.8 s, 285 MB | 2.75 s, 174 MB |
/// | 2 | 0.95 s, 89 MB | 9.7 s, 312 MB | 2.0 s, 175 MB |
/// | 8 | 0.95 s, 100 MB | 9.1 s, 349 MB | 2.3 s, 180 MB |
///
/// One core (`--threads 1`) tracks one capture on the main thread (`read_vantages_filtered`)
/// and is not affected.
///
/// It also fixes glibc's mmap threshold at its default, 128 KiB. Left alone, glibc raises it
/// each time a mapped block is freed (up to 32 MiB, mallopt(3)), so whether a large block is
/// mapped depends on what was freed before it. Fixed, the live table's chunks (`tcp`) and the
/// large lists are always mapped, and their pages go back to the system when they are freed.
///
/// Other C libraries: nothing to do.
pub fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets tunables of the allocator; it is called before any thread of
    // ours starts, and M_ARENA_MAX and M_MMAP_THRESHOLD are ones glibc documents (mallopt(3)).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Runs `f`, what follows tracking (the rules), on a thread of its own when the connections
/// were tracked on threads of their own (`CaptureFlows::tracked_on_threads`), and on this
/// thread otherwise.
///
/// The tracking threads allocate in the second of the two arenas (`tune_malloc`), and what
/// they freed as their connections ended is reused only by the threads of that arena. A
/// thread started once they have exited is handed that arena (glibc's malloc/arena.c: a
/// thread's arena goes on the free list when its last thread exits, and `arena_get2` takes
/// from that list first), so the rules allocate where the live connections were; on the main
/// thread they took fresh pages. The 2 GB churn synth's diagnosis with two tracking threads:
/// 127.5 -> 114.9 MiB (its agent outages alone had added 24 MB to the resident size there, 4
/// on one thread). With one tracking thread the main thread tracked (`read_vantages_filtered`),
/// and a thread of its own sent the rules to the other arena: 107 -> 136 MiB. Elsewhere
/// (the 200 MB synth, the busy pair, the NAT pair) the same within 0.5 MB either way.
pub fn after_tracking<T: Send>(tracked_on_threads: bool, f: impl FnOnce() -> T + Send) -> T {
    if !tracked_on_threads {
        return f();
    }
    std::thread::scope(|scope| scope.spawn(f).join())
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
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
    // The tracking threads are shared among the captures, by size.
    let shares = thread_shares(specs.iter().map(|s| s.path.as_path()), opts.shards);
    let opts = TrackerOptions {
        samples_in_memory: opts.samples_in_memory / specs.len().max(1),
        ..opts
    };
    // Each thread's freed memory is reused by the next phase where it shares the main thread's
    // malloc arena (`tune_malloc`). One capture is read here, on this thread, so that
    // with one tracking thread all of it is: spawned, its thread had the other arena, and the
    // 2 GB synth's diagnosis with `--threads 1` peaked at 349 MB instead of 280.
    let results: Vec<anyhow::Result<CaptureFlows>> = if let [s] = specs {
        let opts = TrackerOptions {
            shards: shares[0],
            ..opts
        };
        // A panic is caught as a reader thread's would be (`joined`).
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            track_capture_filtered(&s.path, opts, filter)
        }));
        vec![r.unwrap_or_else(|_| Err(reader_panicked(&s.path)))]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = specs
                .iter()
                .zip(&shares)
                .map(|(s, &shards)| {
                    let opts = TrackerOptions { shards, ..opts };
                    scope.spawn(move || track_capture_filtered(&s.path, opts, filter))
                })
                .collect();
            handles
                .into_iter()
                .zip(specs)
                .map(|(h, s)| joined(h, &s.path))
                .collect()
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
                // Several captures: each on a thread spawned above.
                flows.tracked_on_threads |= specs.len() > 1;
                vantages.push(crate::align::Vantage {
                    name: spec.name.clone(),
                    flows,
                });
            }
            Err(e) => errors.push(e),
        }
    }
    release_freed();
    (vantages, errors)
}

/// Gives the pages malloc holds free back to the system, in every arena (malloc_trim(3); glibc
/// releases whole free pages inside an arena too, not only at its top). Called once tracking
/// is over: what the live connections took is free by then, but a tracking thread's share of
/// it sits in the other arena (`tune_malloc`), where the main thread's alignment and rules
/// cannot reuse it. And once a two-capture diagnosis's connections are in their file
/// (`CaptureFlows::keep_in_file`).
pub(crate) fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system; it takes every arena's lock.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A reading or tracking thread's result; a panic in it (a bug) is an error naming its capture,
/// not the end of the run.
fn joined<T>(
    h: std::thread::ScopedJoinHandle<'_, anyhow::Result<T>>,
    path: &Path,
) -> anyhow::Result<T> {
    h.join().unwrap_or_else(|_| Err(reader_panicked(path)))
}

fn reader_panicked(path: &Path) -> anyhow::Error {
    anyhow::anyhow!("{}: a reader thread panicked", path.display())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each capture's share of the tracking threads follows its size, at least one each; a
    /// capture whose size cannot be read counts as empty, and if none can they share evenly.
    #[test]
    fn threads_are_shared_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, len: usize| {
            let p = dir.path().join(name);
            std::fs::write(&p, vec![0u8; len]).unwrap();
            p
        };
        let (small, same, big) = (
            file("small", 1_000),
            file("same", 1_000),
            file("big", 49_000),
        );
        let missing = dir.path().join("missing");
        let shares = |paths: &[&std::path::PathBuf], threads| {
            thread_shares(paths.iter().map(|p| p.as_path()), threads)
        };
        assert_eq!(shares(&[&small, &big], 2), [1, 2]);
        assert_eq!(shares(&[&small, &big], 8), [1, 8]);
        assert_eq!(shares(&[&small, &same], 2), [1, 1]);
        assert_eq!(shares(&[&small, &same], 8), [4, 4]);
        assert_eq!(shares(&[&small, &same, &big], 4), [1, 1, 4]);
        assert_eq!(shares(&[&missing, &big], 4), [1, 4]);
        assert_eq!(shares(&[&missing, &missing], 4), [2, 2]);
        assert_eq!(shares(&[&big], 3), [3]);
    }

    /// Tracked on threads of their own: two captures, or one regular file split among
    /// several; not one thread, nor a gzip capture (read once, here). As the reading did it.
    #[test]
    fn which_captures_are_tracked_on_threads() {
        let plain =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/conntrack-reject/agent.pcapng");
        let dir = tempfile::tempdir().unwrap();
        let gz = dir.path().join("agent.pcapng.gz");
        let mut e = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::fast(),
        );
        std::io::copy(&mut std::fs::File::open(&plain).unwrap(), &mut e).unwrap();
        e.finish().unwrap();
        let spec = |p: &Path| VantageSpec {
            name: "a".into(),
            path: p.to_path_buf(),
        };
        let threads = |shards| TrackerOptions {
            shards,
            ..TrackerOptions::default()
        };
        let tracks_on_threads = |specs: &[VantageSpec], opts| {
            let (vantages, errors) = read_vantages_filtered(specs, opts, None);
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(vantages.len(), specs.len());
            vantages.iter().all(|v| v.flows.tracked_on_threads)
        };
        assert!(tracks_on_threads(&[spec(&plain)], threads(2)));
        assert!(!tracks_on_threads(&[spec(&plain)], threads(1)));
        assert!(!tracks_on_threads(&[spec(&gz)], threads(2)));
        assert!(tracks_on_threads(&[spec(&gz), spec(&plain)], threads(1)));
    }

    /// After tracking on threads, the rules run on a thread of their own, and what they return
    /// or the panic they raise (its message) comes back; after tracking here, they run here.
    #[test]
    fn after_tracking_runs_on_its_own_thread_only_after_tracking_threads() {
        let here = std::thread::current().id();
        assert_eq!(after_tracking(false, || std::thread::current().id()), here);
        assert_ne!(after_tracking(true, || std::thread::current().id()), here);
        assert_eq!(after_tracking(true, || 42), 42);
        let panic = std::panic::catch_unwind(|| after_tracking(true, || panic!("rule broke")))
            .expect_err("the rules' panic reaches the caller");
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"rule broke"));
    }

    /// Items come out in the order sent: whole batches, past what the channel holds at once
    /// (the sender waits), and the partial last one, sent when the sender is dropped; then the
    /// channel says it is done.
    #[test]
    fn batch_channel_keeps_order_and_sends_the_last_partial_batch() {
        let n = AHEAD * 3 + BATCH / 2 + 1;
        let (mut tx, mut rx) = batch_channel::<usize>();
        let sender = std::thread::spawn(move || (0..n).for_each(|i| tx.send(i)));
        let got: Vec<usize> = std::iter::from_fn(|| rx.recv()).collect();
        sender.join().expect("sender");
        assert_eq!(got, (0..n).collect::<Vec<_>>());
        assert_eq!(rx.recv(), None);
    }
}

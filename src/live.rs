//! `vantage capture` (with `--features libpcap`): a live capture with the same tool, so that
//! engineers capture on the softswitch with what they will analyse with. Writes pcapng through
//! a temporary file renamed into place at the end, so a half-written capture never has the final
//! name.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crate::capture::{LinkType, Timestamp};
use crate::pcapng_writer::PcapngWriter;

pub struct LiveOptions {
    pub interface: String,
    pub filter: Option<String>,
    pub duration: Duration,
    pub snaplen: i32,
}

/// Captures for `duration` and writes `out`. Returns the number of packets written.
pub fn capture(opts: &LiveOptions, out: &std::path::Path) -> Result<u64> {
    let mut cap = pcap::Capture::from_device(opts.interface.as_str())
        .map_err(|e| anyhow!("{}: {e}", opts.interface))?
        .snaplen(opts.snaplen)
        .promisc(false)
        .immediate_mode(true)
        .open()
        .map_err(|e| anyhow!("{}: cannot capture: {e}", opts.interface))?
        // Non-blocking: a blocking read may wait forever on a quiet interface (libpcap's
        // timeout does not fire before the first packet on Linux), and the duration must hold.
        .setnonblock()
        .map_err(|e| anyhow!("{}: {e}", opts.interface))?;
    if let Some(f) = &opts.filter {
        cap.filter(f, true)
            .map_err(|e| anyhow!("--filter '{f}': {e}"))?;
    }
    let link = LinkType(cap.get_datalink().0 as u32);
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = out
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file name", out.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let file = std::io::BufWriter::new(
        std::fs::File::create(&tmp).map_err(|e| anyhow!("{}: {e}", tmp.display()))?,
    );
    let mut w = PcapngWriter::new(file, &format!("vantage {}", env!("CARGO_PKG_VERSION")))?;
    let iface = w.interface(link, &opts.interface, "captured by vantage capture")?;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < opts.duration {
        match cap.next_packet() {
            Ok(p) => {
                let ts = Timestamp::from_secs_nanos(p.header.ts.tv_sec, p.header.ts.tv_usec * 1000);
                w.packet(iface, ts, p.header.len, p.data, None)?;
                n += 1;
            }
            Err(pcap::Error::TimeoutExpired) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(anyhow!("{}: {e}", opts.interface));
            }
        }
    }
    let file = w.into_inner()?;
    file.into_inner()
        .map_err(|e| anyhow!("{}: {e}", tmp.display()))?
        .sync_all()?;
    std::fs::rename(&tmp, out).map_err(|e| anyhow!("{}: {e}", out.display()))?;
    Ok(n)
}

/// Parses `60s`, `2m`, `1h`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let v: f64 = num.parse().map_err(|_| format!("{s}: not a duration"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("{s}: unit must be ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs))
}

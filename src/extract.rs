//! `vantage extract`: the packets behind a finding or a lined-up connection, from every capture,
//! in one pcapng that Wireshark opens: one interface per vantage (named after it), timestamps
//! moved to the reference clock, and a comment on each evidence packet saying what it shows.
//!
//! The file has one Interface Description Block per (vantage, link type), and Enhanced Packet
//! Blocks with an `opt_comment` on evidence packets (see `pcapng_writer`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::align::{Alignment, Leg};
use crate::capture::{CaptureReader, LinkType, Timestamp};
use crate::decode::{decode, Decoded, Transport};
use crate::diagnose::Diagnosis;
use crate::pcapng_writer::PcapngWriter;
use crate::tcp::{conversation, Conversation};

/// What to extract.
pub enum Selection<'a> {
    /// A lined-up connection id (L3).
    Connection(&'a str),
    /// A finding id (F2): its connections, with its evidence packets commented.
    Finding(&'a str),
}

/// One packet to write.
struct Out {
    ts: Timestamp,
    interface: u32,
    orig_len: u32,
    data: Vec<u8>,
    comment: Option<String>,
}

/// Writes the selected packets to `out` (atomically). Returns the number of packets written.
pub fn extract(
    al: &Alignment,
    diagnosis: Option<&Diagnosis>,
    paths: &[PathBuf],
    what: Selection<'_>,
    out: &std::path::Path,
) -> Result<usize> {
    // Connections and (vantage, frame) -> comment.
    let mut comments: BTreeMap<(String, u64), Vec<String>> = BTreeMap::new();
    let conn_ids: Vec<String> = match what {
        Selection::Connection(id) => vec![id.to_string()],
        Selection::Finding(id) => {
            let Some(d) = diagnosis else {
                bail!("finding {id}: no diagnosis");
            };
            let Some(f) = d.findings.by_id(id) else {
                bail!(
                    "no finding {id} (there are {}: F1..F{})",
                    d.findings.len(),
                    d.findings.len()
                );
            };
            for e in &f.evidence {
                comments
                    .entry((e.vantage.to_string(), e.frame))
                    .or_default()
                    .push(format!("{} {}: {}", f.id, f.kind.name(), e.what));
            }
            f.connections.iter().map(|c| c.to_string()).collect()
        }
    };
    let mut legs: Vec<Leg> = Vec::new();
    for id in &conn_ids {
        let Some(l) = al.connections.by_id(id) else {
            bail!(
                "no lined-up connection {id} (there are {}: L1..L{})",
                al.connections.len(),
                al.connections.len()
            );
        };
        legs.extend(l.legs.iter().cloned());
    }
    // Interfaces: one per (vantage, link type), in vantage order.
    let mut interfaces: Vec<(String, LinkType)> = Vec::new();
    let mut packets: Vec<Out> = Vec::new();
    for (v, vant) in al.vantages.iter().enumerate() {
        // This capture's legs by conversation (endpoints in a fixed order), with the frames
        // each spans: a frame is decoded once and looked up, not compared with every leg.
        let mut mine: std::collections::HashMap<Conversation, Vec<(u64, u64)>> =
            std::collections::HashMap::new();
        for leg in legs.iter().filter(|l| l.at.0 == v) {
            let c = al.connection(leg);
            mine.entry(conversation((c.orig_h, c.orig_p), (c.resp_h, c.resp_p)))
                .or_default()
                .push((c.first_frame, c.last_frame));
        }
        // This capture's commented frames, by number (looked up for every frame read).
        let wanted: BTreeMap<u64, &Vec<String>> = comments
            .iter()
            .filter(|((name, _), _)| name == &vant.name)
            .map(|((_, f), c)| (*f, c))
            .collect();
        if mine.is_empty() && wanted.is_empty() {
            continue;
        }
        let mut r = CaptureReader::open(&paths[v])?;
        while let Some(f) = r.next_frame()? {
            let in_leg = conversation_of(&f)
                .and_then(|c| mine.get(&c))
                .is_some_and(|spans| {
                    spans
                        .iter()
                        .any(|&(first, last)| (first..=last).contains(&f.number))
                });
            let comment = wanted.get(&f.number);
            if !in_leg && comment.is_none() {
                continue;
            }
            let iface = match interfaces
                .iter()
                .position(|(n, l)| n == &vant.name && *l == f.link)
            {
                Some(i) => i,
                None => {
                    interfaces.push((vant.name.clone(), f.link));
                    interfaces.len() - 1
                }
            } as u32;
            packets.push(Out {
                ts: al.to_reference(v, f.ts),
                interface: iface,
                orig_len: f.orig_len,
                data: f.data.to_vec(),
                comment: comment.map(|c| c.join("; ")),
            });
        }
    }
    packets.sort_by_key(|p| p.ts);
    let mut buf = Vec::new();
    write_pcapng(&mut buf, &interfaces, &packets)?;
    crate::report::write_atomically(out, &buf)?;
    Ok(packets.len())
}

/// The conversation a TCP or UDP frame belongs to.
fn conversation_of(f: &crate::capture::Frame<'_>) -> Option<Conversation> {
    let Decoded::Ip(p) = decode(f) else {
        return None;
    };
    let (sp, dp) = match p.transport {
        Transport::Tcp(t) => (t.src_port, t.dst_port),
        Transport::Udp(u) => (u.src_port, u.dst_port),
        Transport::Other { .. } => return None,
    };
    Some(conversation((p.src, sp), (p.dst, dp)))
}

/// pcapng, little-endian, one section.
fn write_pcapng(w: &mut Vec<u8>, interfaces: &[(String, LinkType)], packets: &[Out]) -> Result<()> {
    let mut out = PcapngWriter::new(w, &format!("vantage {}", env!("CARGO_PKG_VERSION")))?;
    for (name, link) in interfaces {
        out.interface(
            *link,
            name,
            &format!("vantage point {name}, on the reference clock"),
        )?;
    }
    for p in packets {
        out.packet(p.interface, p.ts, p.orig_len, &p.data, p.comment.as_deref())?;
    }
    out.into_inner()?;
    Ok(())
}

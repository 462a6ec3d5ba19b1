//! `vantage extract`: the packets behind a finding or a lined-up connection, from every capture,
//! in one pcapng that Wireshark opens: one interface per vantage (named after it), timestamps
//! moved to the reference clock, and a comment on each evidence packet saying what it shows.
//!
//! The pcapng writer is small and follows the spec (IETF draft-ietf-opsawg-pcapng): a Section
//! Header Block, one Interface Description Block per (vantage, link type), and Enhanced Packet
//! Blocks with an `opt_comment` on evidence packets. Timestamps are written in microseconds (the
//! default `if_tsresol`), like Wireshark's captures.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::align::{Alignment, Leg};
use crate::capture::{CaptureReader, LinkType, Timestamp};
use crate::decode::{decode, Decoded, Transport};
use crate::diagnose::Diagnosis;

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
            let Some(f) = d.findings.iter().find(|f| f.id == id) else {
                bail!(
                    "no finding {id} (there are {}: F1..F{})",
                    d.findings.len(),
                    d.findings.len()
                );
            };
            for e in &f.evidence {
                comments
                    .entry((e.vantage.clone(), e.frame))
                    .or_default()
                    .push(format!("{} {}: {}", f.id, f.kind.name(), e.what));
            }
            f.connections.clone()
        }
    };
    let mut legs: Vec<&Leg> = Vec::new();
    for id in &conn_ids {
        let Some(l) = al.connections.iter().find(|c| &c.id == id) else {
            bail!(
                "no lined-up connection {id} (there are {}: L1..L{})",
                al.connections.len(),
                al.connections.len()
            );
        };
        legs.extend(l.legs.iter());
    }
    // Interfaces: one per (vantage, link type), in vantage order.
    let mut interfaces: Vec<(String, LinkType)> = Vec::new();
    let mut packets: Vec<Out> = Vec::new();
    for (v, vant) in al.vantages.iter().enumerate() {
        let mine: Vec<&&Leg> = legs.iter().filter(|l| l.at.0 == v).collect();
        let wanted_frames: Vec<u64> = comments
            .keys()
            .filter(|(name, _)| name == &vant.name)
            .map(|(_, f)| *f)
            .collect();
        if mine.is_empty() && wanted_frames.is_empty() {
            continue;
        }
        let mut r = CaptureReader::open(&paths[v])?;
        while let Some(f) = r.next_frame()? {
            let in_leg = mine.iter().any(|leg| {
                let c = al.connection(leg);
                f.number >= c.first_frame
                    && f.number <= c.last_frame
                    && belongs(&f, (c.orig_h, c.orig_p), (c.resp_h, c.resp_p))
            });
            let comment = comments.get(&(vant.name.clone(), f.number));
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

/// The frame is a packet between these two endpoints (either direction).
fn belongs(
    f: &crate::capture::Frame<'_>,
    a: (std::net::IpAddr, u16),
    b: (std::net::IpAddr, u16),
) -> bool {
    let Decoded::Ip(p) = decode(f) else {
        return false;
    };
    let (sp, dp) = match p.transport {
        Transport::Tcp(t) => (t.src_port, t.dst_port),
        Transport::Udp(u) => (u.src_port, u.dst_port),
        Transport::Other { .. } => return false,
    };
    let (s, d) = ((p.src, sp), (p.dst, dp));
    (s == a && d == b) || (s == b && d == a)
}

fn block(w: &mut impl Write, kind: u32, body: &[u8]) -> std::io::Result<()> {
    let len = (12 + body.len()) as u32;
    w.write_all(&kind.to_le_bytes())?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(body)?;
    w.write_all(&len.to_le_bytes())
}

/// Appends an option (code, value padded to 32 bits).
fn option(body: &mut Vec<u8>, code: u16, value: &[u8]) {
    body.extend_from_slice(&code.to_le_bytes());
    body.extend_from_slice(&(value.len() as u16).to_le_bytes());
    body.extend_from_slice(value);
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
}

fn end_of_options(body: &mut Vec<u8>) {
    body.extend_from_slice(&[0, 0, 0, 0]);
}

/// pcapng, little-endian, one section.
fn write_pcapng(
    w: &mut impl Write,
    interfaces: &[(String, LinkType)],
    packets: &[Out],
) -> Result<()> {
    // Section Header Block: byte-order magic, version 1.0, section length unknown (-1).
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    option(
        &mut shb,
        4,
        format!("vantage {}", env!("CARGO_PKG_VERSION")).as_bytes(),
    ); // shb_userappl
    end_of_options(&mut shb);
    block(w, 0x0A0D_0D0A, &shb)?;
    for (name, link) in interfaces {
        let mut idb = Vec::new();
        idb.extend_from_slice(&(link.0 as u16).to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&0u32.to_le_bytes()); // snaplen: no limit
        option(&mut idb, 2, name.as_bytes()); // if_name
        option(
            &mut idb,
            3,
            format!("vantage point {name}, on the reference clock").as_bytes(),
        ); // if_description
        option(&mut idb, 9, &[6]); // if_tsresol: microseconds
        end_of_options(&mut idb);
        block(w, 0x0000_0001, &idb)?;
    }
    for p in packets {
        let micros = p.ts.0.div_euclid(1_000) as u64;
        let mut epb = Vec::with_capacity(32 + p.data.len());
        epb.extend_from_slice(&p.interface.to_le_bytes());
        epb.extend_from_slice(&((micros >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(micros as u32).to_le_bytes());
        epb.extend_from_slice(&(p.data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&p.orig_len.max(p.data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&p.data);
        while !epb.len().is_multiple_of(4) {
            epb.push(0);
        }
        if let Some(c) = &p.comment {
            option(&mut epb, 1, c.as_bytes()); // opt_comment
            end_of_options(&mut epb);
        }
        block(w, 0x0000_0006, &epb)?;
    }
    Ok(())
}

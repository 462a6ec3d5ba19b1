//! A small streaming pcapng writer (IETF draft-ietf-opsawg-pcapng): a Section Header Block,
//! Interface Description Blocks, and Enhanced Packet Blocks with an optional `opt_comment`.
//! Used by `vantage extract` (evidence files) and `vantage capture` (live capture). Little
//! endian, timestamps in microseconds (the default `if_tsresol`), as Wireshark writes them.

use std::io::{self, Write};

use crate::capture::{LinkType, Timestamp};

pub struct PcapngWriter<W: Write> {
    out: W,
    interfaces: u32,
}

fn pad(body: &mut Vec<u8>) {
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
}

/// Appends an option (code, value padded to 32 bits).
fn option(body: &mut Vec<u8>, code: u16, value: &[u8]) {
    body.extend_from_slice(&code.to_le_bytes());
    body.extend_from_slice(&(value.len() as u16).to_le_bytes());
    body.extend_from_slice(value);
    pad(body);
}

fn end_of_options(body: &mut Vec<u8>) {
    body.extend_from_slice(&[0, 0, 0, 0]);
}

impl<W: Write> PcapngWriter<W> {
    /// Starts a section; `application` goes into `shb_userappl`.
    pub fn new(mut out: W, application: &str) -> io::Result<Self> {
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes()); // section length: not given
        option(&mut shb, 4, application.as_bytes());
        end_of_options(&mut shb);
        Self::block(&mut out, 0x0A0D_0D0A, &shb)?;
        Ok(PcapngWriter { out, interfaces: 0 })
    }

    fn block(out: &mut W, kind: u32, body: &[u8]) -> io::Result<()> {
        let len = (12 + body.len()) as u32;
        out.write_all(&kind.to_le_bytes())?;
        out.write_all(&len.to_le_bytes())?;
        out.write_all(body)?;
        out.write_all(&len.to_le_bytes())
    }

    /// Declares an interface; returns its id for `packet`.
    pub fn interface(&mut self, link: LinkType, name: &str, description: &str) -> io::Result<u32> {
        let mut idb = Vec::new();
        idb.extend_from_slice(&(link.0 as u16).to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&0u32.to_le_bytes()); // snaplen: no limit
        option(&mut idb, 2, name.as_bytes()); // if_name
        if !description.is_empty() {
            option(&mut idb, 3, description.as_bytes()); // if_description
        }
        option(&mut idb, 9, &[6]); // if_tsresol: microseconds
        end_of_options(&mut idb);
        Self::block(&mut self.out, 0x0000_0001, &idb)?;
        self.interfaces += 1;
        Ok(self.interfaces - 1)
    }

    /// Writes one packet.
    pub fn packet(
        &mut self,
        interface: u32,
        ts: Timestamp,
        orig_len: u32,
        data: &[u8],
        comment: Option<&str>,
    ) -> io::Result<()> {
        let micros = ts.0.div_euclid(1_000) as u64;
        let mut epb = Vec::with_capacity(32 + data.len());
        epb.extend_from_slice(&interface.to_le_bytes());
        epb.extend_from_slice(&((micros >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(micros as u32).to_le_bytes());
        epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&orig_len.max(data.len() as u32).to_le_bytes());
        epb.extend_from_slice(data);
        pad(&mut epb);
        if let Some(c) = comment {
            option(&mut epb, 1, c.as_bytes()); // opt_comment
            end_of_options(&mut epb);
        }
        Self::block(&mut self.out, 0x0000_0006, &epb)
    }

    pub fn into_inner(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

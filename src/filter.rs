//! BPF filters (`--filter`, with `--features libpcap`): libpcap compiles the expression once per
//! link type met in the captures, and the compiled program runs on the frames our own reader
//! yields, so filtering works the same on pcap, pcapng (several link types in one file) and .gz.

use std::collections::HashMap;

use anyhow::{anyhow, Result};

use crate::capture::{Frame, LinkType};

pub struct BpfFilter {
    expr: String,
    programs: HashMap<u32, pcap::BpfProgram>,
}

impl BpfFilter {
    /// Checks the expression now (on Ethernet), so that a typo fails before any file is read.
    pub fn new(expr: &str) -> Result<Self> {
        let mut f = BpfFilter {
            expr: expr.to_string(),
            programs: HashMap::new(),
        };
        f.program(LinkType::ETHERNET)?;
        Ok(f)
    }

    fn program(&mut self, link: LinkType) -> Result<&pcap::BpfProgram> {
        if !self.programs.contains_key(&link.0) {
            let dead = pcap::Capture::dead(pcap::Linktype(link.0 as i32))
                .map_err(|e| anyhow!("libpcap: {e}"))?;
            let prog = dead.compile(&self.expr, true).map_err(|e| {
                anyhow!(
                    "--filter '{}': cannot compile for link type {}: {e}",
                    self.expr,
                    link.name()
                )
            })?;
            self.programs.insert(link.0, prog);
        }
        Ok(&self.programs[&link.0])
    }

    /// Whether the frame passes the filter.
    pub fn matches(&mut self, frame: &Frame<'_>) -> Result<bool> {
        Ok(self.program(frame.link)?.filter(frame.data))
    }
}

// Each reader thread compiles its own programs; a `BpfProgram` only points at its own memory.
unsafe impl Send for BpfFilter {}

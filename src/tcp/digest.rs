//! A finished connection that no rule of a one-capture diagnosis ends: what the alignment and
//! the rules that read across connections read from it, in ~200 bytes where its summary
//! (`Connection` and what it points to) is ~1.4 KB.
//!
//! On a busy capture most connections end normally, and each was kept whole until the rules ran
//! after the last packet: 93 000 summaries, 134 MB of the 2 GB synth's 207 MB heap peak
//! (heaptrack, `benches/RESULTS.md`). The tracker keeps a connection whole only when a rule may
//! end it (`TrackerOptions::digest` says which, from `diagnose::rules`), and this digest
//! otherwise. Which fields the rules read, and why, is in `diagnose::rules::digest_of`, the one
//! function that fills it.

use std::net::IpAddr;

use crate::boxed_list::BoxedList;
use crate::capture::Timestamp;

use super::{Proto, Side, Uid, TOP_GAPS};

#[derive(Clone, Debug, PartialEq)]
pub struct Digest {
    /// What a lined-up connection's leg names (`align::Leg`), as the summary has it.
    pub uid: Uid,
    pub proto: Proto,
    pub orig_h: IpAddr,
    pub orig_p: u16,
    pub resp_h: IpAddr,
    pub resp_p: u16,
    pub ts: Timestamp,
    pub first_frame: u64,
    pub last_frame: u64,
    /// Zeek's conn_state (the text report's table of lined-up connections).
    pub conn_state: Option<&'static str>,
    /// Who sent the FIN or RST that ended it, if one did (the verdict counts disconnects).
    pub ended_by: Option<Side>,
    /// The silences it lived through (those that ended before its last packet), seconds:
    /// `idle_timeout`'s lower bound. At most `TOP_GAPS`, the first `survived_n`.
    pub survived: [f64; TOP_GAPS],
    pub survived_n: u8,
    /// Retransmissions and data segments, both directions (`weak_network`).
    pub retransmissions: u64,
    pub data_segments: u64,
    /// The first retransmissions the evidence cites (time, frame): the originator's, then the
    /// responder's.
    pub retransmitted: BoxedList<(Timestamp, u64)>,
    /// When the server first answered usefully, and the frame (`agent_outage`'s recovery).
    pub recovery: Option<(Timestamp, u64)>,
}

impl Digest {
    /// The silences it lived through, seconds.
    pub fn survived(&self) -> &[f64] {
        &self.survived[..usize::from(self.survived_n)]
    }
}

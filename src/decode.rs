//! Stage 2: frames -> IP/TCP/UDP views.
//!
//! A `Packet` borrows the frame's bytes: nothing is copied and nothing is allocated per packet.
//! Link layers: Ethernet (with 802.1Q / QinQ), Linux SLL (113) and SLL2 (276), raw IP (101, 228,
//! 229), BSD NULL (0, host byte order) and LOOP (108, network byte order). etherparse's "lax"
//! slicer does the IP and transport layers, so a packet cut short by the snaplen still yields the
//! headers it has.

use std::net::{IpAddr, Ipv4Addr};

use etherparse::{
    EtherType, LaxLinkExtSlice, LaxNetSlice, LaxSlicedPacket, TcpOptionElement, TcpSlice,
    TransportSlice, UdpSlice,
};

use crate::capture::{Frame, LinkType};

/// TCP flags, in header order (RFC 9293 §3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
    pub fn psh(self) -> bool {
        self.0 & Self::PSH != 0
    }
    /// tcpdump's notation: `[S.]`, `[R]`, `[F.]`, `[P.]`.
    pub fn tcpdump(self) -> String {
        let mut s = String::new();
        for (bit, c) in [
            (Self::FIN, 'F'),
            (Self::SYN, 'S'),
            (Self::RST, 'R'),
            (Self::PSH, 'P'),
            (Self::URG, 'U'),
        ] {
            if self.0 & bit != 0 {
                s.push(c);
            }
        }
        if self.ack() {
            s.push('.');
        }
        if s.is_empty() {
            s.push_str("none");
        }
        s
    }
}

/// The TCP options the analysis uses (RFC 9293 §3.2, RFC 7323, RFC 2018).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOptions {
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    pub sack_blocks: u8,
    /// (TSval, TSecr)
    pub timestamp: Option<(u32, u32)>,
    /// Number of option bytes; a RST built by a middlebox usually has none.
    pub len: u8,
}

#[derive(Clone, Copy, Debug)]
pub struct TcpSegment<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub window: u16,
    /// The option bytes (after the fixed 20-byte header): parsed only when asked for, with
    /// `options()`, since the analysis reads only their length.
    pub options_raw: &'a [u8],
    /// The segment's payload length from the IP header, even where the capture kept less.
    pub payload_len: u32,
    /// The payload bytes that were captured (may be shorter than `payload_len`).
    pub payload: &'a [u8],
}

#[derive(Clone, Copy, Debug)]
pub struct UdpDatagram<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: u32,
    pub payload: &'a [u8],
}

#[derive(Clone, Copy, Debug)]
pub enum Transport<'a> {
    Tcp(TcpSegment<'a>),
    Udp(UdpDatagram<'a>),
    /// Another IP protocol (ICMP, ...), or a later IP fragment, or a transport header that was
    /// cut short.
    Other {
        protocol: u8,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    No,
    /// The first fragment: its transport header is used.
    First,
    /// A later fragment: counted, not decoded.
    Later,
}

/// An IP packet seen in a frame.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
    /// IPv4 identification; `None` for IPv6.
    pub ip_id: Option<u16>,
    /// Total IP length from the header (what Zeek counts as ip_bytes).
    pub ip_len: u32,
    /// VLAN ids, outer first; 0 where absent. Part of the connection key, as in Zeek.
    pub vlan: [u16; 2],
    pub fragment: Fragment,
    pub transport: Transport<'a>,
}

/// What a frame turned out to hold.
#[derive(Clone, Copy, Debug)]
pub enum Decoded<'a> {
    Ip(Packet<'a>),
    /// ARP, LLDP, ...: not IP, nothing to track.
    NotIp,
    /// Too short or inconsistent to decode; the reason is for counters and warnings.
    Malformed(&'static str),
}

/// Decodes one frame.
pub fn decode<'a>(frame: &Frame<'a>) -> Decoded<'a> {
    decode_link(frame.link, frame.data)
}

pub fn decode_link(link: LinkType, data: &[u8]) -> Decoded<'_> {
    if link.0 == 1 {
        if let Some(d) = ethernet_ipv4_tcp(data) {
            return d;
        }
    }
    decode_general(link, data)
}

/// The common case, read straight off the bytes: untagged Ethernet II, IPv4 whole in the
/// frame and not fragmented, TCP. Anything else (VLAN, IPv6, UDP, fragments, a frame cut by
/// the snaplen, a length that does not add up) is `None` and goes the general way, which gives
/// the same answer for every frame this accepts (a test replays every fixture through both).
/// The general way costs a `LaxSlicedPacket` (hundreds of bytes, moved around) per frame: 6 %
/// of `flows` on a 200 MB capture.
fn ethernet_ipv4_tcp(data: &[u8]) -> Option<Decoded<'_>> {
    let (ip, ihl, total) = ethernet_ipv4_tcp_bounds(data)?;
    // Ethernet pads short frames: the IP total length says where the packet ends.
    let tcp = TcpSlice::from_slice(&ip[ihl..total]).ok()?;
    let payload_len = (total - ihl) as u32;
    Some(Decoded::Ip(Packet {
        src: IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15])),
        dst: IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19])),
        ttl: ip[8],
        ip_id: Some(u16::from_be_bytes([ip[4], ip[5]])),
        ip_len: total as u32,
        vlan: [0, 0],
        fragment: Fragment::No,
        transport: Transport::Tcp(tcp_segment(&tcp, payload_len)),
    }))
}

/// An Ethernet II frame's IPv4 packet (from its header on), its header length and total
/// length, where the packet is a whole TCP segment: the fast path's checks on the link and IP
/// layers.
#[inline]
fn ethernet_ipv4_tcp_bounds(data: &[u8]) -> Option<(&[u8], usize, usize)> {
    // Ethernet II: destination, source, EtherType 0x0800 (IPv4).
    let ip = data.get(14..)?;
    if data[12..14] != [0x08, 0x00] || ip.len() < 20 {
        return None;
    }
    // RFC 791 §3.1: version 4, IHL in 32-bit words, total length, flags and fragment offset.
    let (version, ihl) = (ip[0] >> 4, (ip[0] & 0x0f) as usize * 4);
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    let more_fragments_or_offset = frag & 0x3fff != 0;
    if version != 4
        || ihl < 20
        || total < ihl + 20
        || total > ip.len()
        || more_fragments_or_offset
        || ip[9] != 6
    {
        return None;
    }
    Some((ip, ihl, total))
}

/// The two ends of a TCP segment over IPv4, as (address, port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ends {
    pub src: (Ipv4Addr, u16),
    pub dst: (Ipv4Addr, u16),
}

/// The ends of a frame's TCP segment, read without decoding it: `Some` exactly where
/// `decode_link` takes its fast path (Ethernet, IPv4 not fragmented, TCP), with the addresses
/// and ports it decodes. The lookahead (`pipeline::Lookahead`) reads them to fetch the
/// connection before the frame's turn, when the frame is decoded; decoding it twice, there
/// and then, was ~3 % of a diagnosis's instructions (issue 8).
pub fn peek_ends(link: LinkType, data: &[u8]) -> Option<Ends> {
    if link.0 != 1 {
        return None;
    }
    let (ip, ihl, total) = ethernet_ipv4_tcp_bounds(data)?;
    let tcp = &ip[ihl..total];
    // `TcpSlice::from_slice`'s checks (RFC 9293 §3.1: the data offset in 32-bit words, at
    // least 5), so that a frame peeked is one the fast path decodes.
    let header_len = usize::from(tcp[12] >> 4) * 4;
    if header_len < 20 || tcp.len() < header_len {
        return None;
    }
    let addr = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    let port = |at: usize| u16::from_be_bytes([tcp[at], tcp[at + 1]]);
    Some(Ends {
        src: (addr(12), port(0)),
        dst: (addr(16), port(2)),
    })
}

/// Every link type and every case, through etherparse's lax slicer.
fn decode_general(link: LinkType, data: &[u8]) -> Decoded<'_> {
    let sliced = match link.0 {
        1 => match LaxSlicedPacket::from_ethernet(data) {
            Ok(p) => p,
            Err(_) => return Decoded::Malformed("ethernet header cut short"),
        },
        // Linux cooked capture v1: 16-byte header, protocol type at offset 14.
        113 => {
            if data.len() < 16 {
                return Decoded::Malformed("SLL header cut short");
            }
            let et = u16::from_be_bytes([data[14], data[15]]);
            LaxSlicedPacket::from_ether_type(EtherType(et), &data[16..])
        }
        // Linux cooked capture v2: 20-byte header, protocol type at offset 0
        // (https://www.tcpdump.org/linktypes/LINKTYPE_LINUX_SLL2.html). etherparse has no SLL2.
        276 => {
            if data.len() < 20 {
                return Decoded::Malformed("SLL2 header cut short");
            }
            let et = u16::from_be_bytes([data[0], data[1]]);
            LaxSlicedPacket::from_ether_type(EtherType(et), &data[20..])
        }
        101 | 228 | 229 => match LaxSlicedPacket::from_ip(data) {
            Ok(p) => p,
            Err(_) => return Decoded::Malformed("IP header invalid or cut short"),
        },
        // NULL: 4-byte address family in the capturing host's byte order; LOOP: network order.
        // AF_INET is 2 everywhere; AF_INET6 is 24, 28 or 30 depending on the BSD.
        0 | 108 => {
            if data.len() < 4 {
                return Decoded::Malformed("loopback header cut short");
            }
            let raw = [data[0], data[1], data[2], data[3]];
            let family = if link.0 == 108 {
                u32::from_be_bytes(raw)
            } else {
                let le = u32::from_le_bytes(raw);
                if le < 256 {
                    le
                } else {
                    u32::from_be_bytes(raw)
                }
            };
            match family {
                2 | 24 | 28 | 30 => match LaxSlicedPacket::from_ip(&data[4..]) {
                    Ok(p) => p,
                    Err(_) => return Decoded::Malformed("IP header invalid or cut short"),
                },
                _ => return Decoded::NotIp,
            }
        }
        _ => return Decoded::Malformed("unsupported link type"),
    };
    from_sliced(&sliced)
}

fn from_sliced<'a>(p: &LaxSlicedPacket<'a>) -> Decoded<'a> {
    let mut vlan = [0u16; 2];
    let mut n = 0;
    for ext in &p.link_exts {
        if let LaxLinkExtSlice::Vlan(v) = ext {
            if n < 2 {
                vlan[n] = v.vlan_identifier().value();
                n += 1;
            }
        }
    }
    let (src, dst, ttl, ip_id, ip_len, payload_len, fragment, protocol, payload) = match &p.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let hl = h.ihl() as u32 * 4;
            let total = h.total_len() as u32;
            let pl = ip.payload();
            // total_len 0 happens with TSO on the capturing host: trust the captured length.
            let payload_len = if total >= hl {
                (total - hl)
                    .saturating_sub(ip.extensions().auth.map_or(0, |a| a.slice().len() as u32))
            } else {
                pl.payload.len() as u32
            };
            let frag = if !pl.fragmented {
                Fragment::No
            } else if h.fragments_offset().value() == 0 {
                Fragment::First
            } else {
                Fragment::Later
            };
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                h.ttl(),
                Some(h.identification()),
                total.max(hl),
                payload_len,
                frag,
                pl.ip_number.0,
                pl.payload,
            )
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let h = ip.header();
            let pl = ip.payload();
            let ext = ip.extensions().slice().len() as u32;
            let plen = h.payload_length() as u32;
            let payload_len = if plen > 0 {
                plen.saturating_sub(ext)
            } else {
                pl.payload.len() as u32
            };
            // IPv6 fragments are counted but not decoded (their offsets sit in an extension
            // header; they are rare on the paths we analyse).
            let frag = if pl.fragmented {
                Fragment::Later
            } else {
                Fragment::No
            };
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                h.hop_limit(),
                None,
                plen + 40,
                payload_len,
                frag,
                pl.ip_number.0,
                pl.payload,
            )
        }
        Some(LaxNetSlice::Arp(_)) | None => {
            return match &p.stop_err {
                Some(_) if p.net.is_none() && is_ip_ethertype(p) => {
                    Decoded::Malformed("IP header invalid or cut short")
                }
                _ => Decoded::NotIp,
            }
        }
    };
    let transport = match (&p.transport, fragment) {
        (Some(TransportSlice::Tcp(t)), _) => Transport::Tcp(tcp_segment(t, payload_len)),
        (Some(TransportSlice::Udp(u)), _) => Transport::Udp(udp_datagram(u)),
        (_, Fragment::First) if protocol == 6 => match TcpSlice::from_slice(payload) {
            Ok(t) => Transport::Tcp(tcp_segment(&t, payload_len)),
            Err(_) => Transport::Other { protocol },
        },
        (_, Fragment::First) if protocol == 17 => match UdpSlice::from_slice_lax(payload) {
            Ok(u) => Transport::Udp(udp_datagram(&u)),
            Err(_) => Transport::Other { protocol },
        },
        // A whole (unfragmented) TCP or UDP packet whose header did not decode: cut by the
        // snaplen, or garbage. Counted as undecodable (with a warning), not as "other IP".
        (None, Fragment::No) if protocol == 6 => {
            return Decoded::Malformed("TCP header invalid or cut short")
        }
        (None, Fragment::No) if protocol == 17 => {
            return Decoded::Malformed("UDP header invalid or cut short")
        }
        _ => Transport::Other { protocol },
    };
    Decoded::Ip(Packet {
        src,
        dst,
        ttl,
        ip_id,
        ip_len,
        vlan,
        fragment,
        transport,
    })
}

fn is_ip_ethertype(p: &LaxSlicedPacket<'_>) -> bool {
    use etherparse::LinkSlice;
    match &p.link {
        Some(LinkSlice::Ethernet2(e)) => {
            let et = e.ether_type();
            et == EtherType::IPV4 || et == EtherType::IPV6
        }
        _ => true,
    }
}

impl TcpSegment<'_> {
    /// The options the analysis may use, parsed from `options_raw`.
    pub fn options(&self) -> TcpOptions {
        let mut options = TcpOptions {
            len: self.options_raw.len().min(40) as u8,
            ..TcpOptions::default()
        };
        for o in etherparse::TcpOptionsIterator::from_slice(self.options_raw) {
            match o {
                Ok(TcpOptionElement::MaximumSegmentSize(m)) => options.mss = Some(m),
                Ok(TcpOptionElement::WindowScale(w)) => options.window_scale = Some(w),
                Ok(TcpOptionElement::SelectiveAcknowledgementPermitted) => {
                    options.sack_permitted = true
                }
                Ok(TcpOptionElement::SelectiveAcknowledgement(_, rest)) => {
                    options.sack_blocks = 1 + rest.iter().filter(|b| b.is_some()).count() as u8
                }
                Ok(TcpOptionElement::Timestamp(v, e)) => options.timestamp = Some((v, e)),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        options
    }
}

fn tcp_segment<'a>(t: &TcpSlice<'a>, ip_payload_len: u32) -> TcpSegment<'a> {
    let header_len = t.data_offset() as u32 * 4;
    TcpSegment {
        src_port: t.source_port(),
        dst_port: t.destination_port(),
        seq: t.sequence_number(),
        ack: t.acknowledgment_number(),
        flags: TcpFlags(t.header_slice()[13] & 0x3f),
        window: t.window_size(),
        // The header slice is the fixed 20 bytes and the options (etherparse checked its length).
        options_raw: t.header_slice().get(20..).unwrap_or(&[]),
        payload_len: ip_payload_len.saturating_sub(header_len),
        payload: t.payload(),
    }
}

fn udp_datagram<'a>(u: &UdpSlice<'a>) -> UdpDatagram<'a> {
    UdpDatagram {
        src_port: u.source_port(),
        dst_port: u.destination_port(),
        payload_len: (u.length() as u32).saturating_sub(8),
        payload: u.payload(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_packet(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1])
            .ipv4([192, 0, 2, 10], [198, 51, 100, 10], 64)
            .tcp(40000, 8080, 1000, 64240)
            .syn()
            .options(&[
                TcpOptionElement::MaximumSegmentSize(1460),
                TcpOptionElement::SelectiveAcknowledgementPermitted,
                TcpOptionElement::Timestamp(7, 0),
                TcpOptionElement::Noop,
                TcpOptionElement::WindowScale(7),
            ])
            .unwrap();
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    #[test]
    fn ethernet_tcp_options() {
        let v = tcp_packet(b"");
        let Decoded::Ip(p) = decode_link(LinkType::ETHERNET, &v) else {
            panic!("not decoded")
        };
        assert_eq!(p.ttl, 64);
        let Transport::Tcp(t) = p.transport else {
            panic!("not tcp")
        };
        assert!(t.flags.syn() && !t.flags.ack());
        assert_eq!(t.options().mss, Some(1460));
        assert_eq!(t.options().window_scale, Some(7));
        assert!(t.options().sack_permitted);
        assert_eq!(t.options().len, 20);
        assert_eq!(t.options().timestamp, Some((7, 0)));
        assert_eq!(t.flags.tcpdump(), "S");
    }

    #[test]
    fn snaplen_cut_keeps_headers_and_true_length() {
        let v = tcp_packet(&[0x41; 100]);
        // keep Ethernet + IP + TCP headers and 10 payload bytes
        let cut = &v[..v.len() - 90];
        let Decoded::Ip(p) = decode_link(LinkType::ETHERNET, cut) else {
            panic!("not decoded")
        };
        let Transport::Tcp(t) = p.transport else {
            panic!("not tcp")
        };
        assert_eq!(t.payload_len, 100);
        assert_eq!(t.payload.len(), 10);
    }

    /// The fast path agrees with the general one on every Ethernet frame of every fixture
    /// (the lab's captures and the public corpus), field for field.
    #[test]
    fn fast_path_agrees_with_etherparse_on_every_fixture_frame() {
        let files = crate::testing::fixture_captures();
        let (mut fast, mut frames) = (0, 0);
        for f in &files {
            let Ok(mut r) = crate::capture::CaptureReader::open(f) else {
                continue;
            };
            while let Ok(Some(frame)) = r.next_frame() {
                if frame.link.0 != 1 {
                    continue;
                }
                frames += 1;
                if let Some(d) = ethernet_ipv4_tcp(frame.data) {
                    fast += 1;
                    let general = decode_general(frame.link, frame.data);
                    assert_eq!(
                        format!("{d:?}"),
                        format!("{general:?}"),
                        "{} frame {}",
                        f.display(),
                        frame.number
                    );
                }
            }
        }
        assert!(
            fast > 1_000 && fast < frames,
            "{fast} of {frames} frames took the fast path"
        );
    }

    proptest::proptest! {
        /// Damaged headers: whatever the fast path accepts, the general path decodes the same.
        #[test]
        fn fast_path_agrees_on_damaged_frames(
            at in proptest::collection::vec((0usize..80, proptest::prelude::any::<u8>()), 1..4),
            cut in 0usize..40,
        ) {
            let mut v = tcp_packet(&[0x41; 20]);
            for (i, b) in at {
                let i = i % v.len();
                v[i] = b;
            }
            v.truncate(v.len().saturating_sub(cut));
            if let Some(d) = ethernet_ipv4_tcp(&v) {
                let general = decode_general(LinkType::ETHERNET, &v);
                proptest::prop_assert_eq!(format!("{d:?}"), format!("{general:?}"));
            }
        }
    }

    #[test]
    fn sll2_and_null_headers() {
        let v = tcp_packet(b"hi");
        let ip = &v[14..];
        let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6];
        sll2.extend_from_slice(&[0; 8]);
        sll2.extend_from_slice(ip);
        assert!(matches!(
            decode_link(LinkType::LINUX_SLL2, &sll2),
            Decoded::Ip(_)
        ));
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(ip);
        assert!(matches!(decode_link(LinkType::NULL, &null), Decoded::Ip(_)));
        let mut lo = 2u32.to_be_bytes().to_vec();
        lo.extend_from_slice(ip);
        assert!(matches!(decode_link(LinkType::LOOP, &lo), Decoded::Ip(_)));
        assert!(matches!(
            decode_link(LinkType::LINUX_SLL2, &sll2[..10]),
            Decoded::Malformed(_)
        ));
    }
}

#!/usr/bin/env python3
"""Builds the seed corpora in fuzz/corpus/<target>/ from the committed fixtures.

Standard library only. capture: the small capture files themselves; decode: single frames,
prefixed with the byte that picks their link type; http, websocket, sip, tls: each TCP
direction's payload, put in sequence order (and UDP payloads for sip); tcp: a few
hand-written segment scripts in the target's input format (see harness.rs).

    python3 fuzz/seeds.py            # from the repository root
"""

import gzip
import hashlib
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")
LINKS = [0, 1, 101, 108, 113, 228, 229, 276]
MAX_SEED = 64 * 1024


def frames(path):
    """(linktype, bytes) of every frame of a pcap or pcapng file."""
    data = open(path, "rb").read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except Exception:
            return
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = "<" if magic[0] in (0xD4, 0x4D) else ">"
        link = struct.unpack(e + "I", data[20:24])[0]
        off = 24
        while off + 16 <= len(data):
            _, _, incl, _ = struct.unpack(e + "IIII", data[off:off + 16])
            if incl > MAX_SEED * 4:
                return
            yield link, data[off + 16:off + 16 + incl]
            off += 16 + incl
    elif magic == b"\x0a\x0d\x0d\x0a":
        off, e, links = 0, "<", []
        while off + 12 <= len(data):
            btype = struct.unpack(e + "I", data[off:off + 4])[0]
            if btype == 0x0A0D0D0A:
                e = "<" if data[off + 8:off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
                links = []
            blen = struct.unpack(e + "I", data[off + 4:off + 8])[0]
            if blen < 12 or off + blen > len(data):
                return
            body = data[off + 8:off + blen - 4]
            if btype == 1:
                links.append(struct.unpack(e + "H", body[:2])[0])
            elif btype == 6 and len(body) >= 20:
                ifid, _, _, caplen, _ = struct.unpack(e + "IIIII", body[:20])
                if ifid < len(links):
                    yield links[ifid], body[20:20 + caplen]
            off += blen


def ip_of(link, f):
    """The IP packet inside a frame, or None."""
    if link == 1:
        off = 12
        et = struct.unpack(">H", f[off:off + 2])[0] if len(f) >= 14 else 0
        while et in (0x8100, 0x88A8) and len(f) >= off + 6:
            off += 4
            et = struct.unpack(">H", f[off:off + 2])[0]
        return f[off + 2:] if et in (0x0800, 0x86DD) else None
    if link == 113:
        return f[16:]
    if link == 276:
        return f[20:]
    if link in (0, 108):
        return f[4:]
    if link in (101, 228, 229):
        return f
    return None


def transport(ip):
    """(proto, src, dst, sport, dport, seq, payload) or None."""
    if len(ip) < 20:
        return None
    if ip[0] >> 4 == 4:
        ihl = (ip[0] & 15) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        proto, src, dst, l4 = ip[9], ip[12:16], ip[16:20], ip[ihl:total]
    elif ip[0] >> 4 == 6 and len(ip) >= 40:
        plen = struct.unpack(">H", ip[4:6])[0]
        proto, src, dst, l4 = ip[6], ip[8:24], ip[24:40], ip[40:40 + plen]
    else:
        return None
    if proto == 6 and len(l4) >= 20:
        sport, dport, seq = struct.unpack(">HHI", l4[:8])
        return 6, src, dst, sport, dport, seq, l4[(l4[12] >> 4) * 4:]
    if proto == 17 and len(l4) >= 8:
        sport, dport = struct.unpack(">HH", l4[:4])
        return 17, src, dst, sport, dport, 0, l4[8:]
    return None


def save(target, blob):
    if not blob:
        return
    blob = blob[:MAX_SEED]
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(blob).hexdigest()), "wb") as f:
        f.write(blob)


def classify(stream):
    if stream[:4] in (b"GET ", b"HTTP", b"POST"):
        return "http"
    if stream[:1] == b"\x16" and stream[1:2] == b"\x03":
        return "tls"
    if b"SIP/2.0" in stream[:200]:
        return "sip"
    return None


def main():
    caps = []
    for d, _, files in os.walk(os.path.join(ROOT, "fixtures")):
        for n in files:
            if n.endswith((".pcap", ".pcapng", ".gz", ".cap", ".ntar")):
                caps.append(os.path.join(d, n))
    for p in sorted(caps):
        if os.path.getsize(p) <= MAX_SEED:
            save("capture", open(p, "rb").read())
        streams = {}
        try:
            for i, (link, f) in enumerate(frames(p)):
                if i < 4 and link in LINKS:
                    save("decode", bytes([LINKS.index(link)]) + f)
                ip = ip_of(link, f)
                t = ip and transport(ip)
                if not t:
                    continue
                proto, src, dst, sport, dport, seq, payload = t
                if proto == 17:
                    if b"SIP/2.0" in payload[:200]:
                        save("sip", payload)
                    continue
                if payload:
                    streams.setdefault((src, dst, sport, dport), {}).setdefault(seq, payload)
        except Exception as e:  # a broken fixture: seeds from what was read
            print(f"{p}: {e}", file=sys.stderr)
        for segs in streams.values():
            stream = b"".join(segs[s] for s in sorted(segs))[:MAX_SEED]
            kind = classify(stream)
            if kind:
                save(kind, stream)
            if kind == "http":
                head_end = stream.find(b"\r\n\r\n")
                if stream.startswith(b"HTTP/1.1 101") and head_end > 0:
                    rest = stream[head_end + 4:]
                    # websocket target: config byte, 0 split bytes, then the frames.
                    save("websocket", b"\x00\x00" + rest)
                    save("websocket", b"\x11\x03\x01\x05\x00" + rest)
            if stream[:1] in (b"\x81", b"\x82", b"\x88", b"\x89", b"\x8a", b"\x01"):
                save("websocket", b"\x01\x00" + stream)
            if kind == "sip":
                save("sip", stream)
            if kind == "tls":
                save("tls", b"\x00" + stream)
    # tcp: isn(2+2), server port pick, then 8-byte segments (ctl, flags, seq_off, ack_off,
    # len, step) each followed by its payload.
    def seg(ctl, flags, seq, ack, payload=b"", step=1):
        return struct.pack(">BBHHBB", ctl, flags, seq, ack, len(payload), step) + payload

    hs = seg(0, 0x02, 0, 0) + seg(1, 0x12, 0, 1) + seg(0, 0x10, 1, 1)
    req = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    ws = b"\x81\x85\x01\x02\x03\x04" + bytes(c ^ k for c, k in zip(b"hello", b"\x01\x02\x03\x04\x01"))
    r1 = 1 + len(req)
    s1 = 1 + len(resp)
    scripts = [
        hs + seg(0, 0x18, 1, 1, req) + seg(1, 0x18, 1, r1, resp) + seg(0, 0x18, r1, s1, ws, 0x45)
        + seg(0, 0x11, r1 + len(ws), s1) + seg(1, 0x11, s1, r1 + len(ws) + 1) + seg(0, 0x10, r1 + len(ws) + 1, s1 + 1),
        hs + seg(0, 0x18, 1, 1, b"abc") + seg(0, 0x18, 1, 1, b"abc") + seg(1, 0x04, 1, 0, b"", 0x48),
        seg(0, 0x02, 0, 0) + seg(1, 0x14, 0, 1),
        hs + seg(0, 0x18, 4, 1, b"def") + seg(0, 0x18, 1, 1, b"abc") + seg(1, 0x10, 1, 7, b"", 0x85)
        + seg(0, 0x10, 6, 1) + seg(0, 0x11, 7, 1, b"", 0xc2),
    ]
    for s in scripts:
        save("tcp", b"\x12\x34\x56\x78\x00" + s)
        save("tcp", b"\x12\x34\x56\x78\x02" + s)
    for t in ("http", "websocket", "sip", "tls"):
        os.makedirs(os.path.join(OUT, t), exist_ok=True)
    save("http", req)
    save("http", resp)


if __name__ == "__main__":
    main()

//! LEB128 varints (7 bits a byte, low first, the high bit set on all but the last) and zigzag
//! for signed values: the compact records kept per connection (`app::heartbeat::HbLog`) and per
//! finished connection (`tcp::digest`). Written and read by this program only.

/// Bytes `push` writes for `v`.
pub fn len(v: u64) -> usize {
    (64 - v.leading_zeros() as usize).max(1).div_ceil(7)
}

pub fn push(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The varint at `b[at..]` and where the next field starts; `None` if it runs past `b` or
/// past 64 bits (never written, but the bytes may come back from a disk changed).
/// Inlined always: the heartbeat analysis reads every log's records with it, and once the
/// parked connections' codec (`tcp::park`) called it too, the compiler stopped inlining it
/// there (cachegrind, 200 MB synth one-thread diagnosis: 6.541 G instructions before parking,
/// 6.571 G with it, 6.529 G inlined always; `#[inline]` alone left it out of line).
#[inline(always)]
pub fn read(b: &[u8], mut at: usize) -> Option<(u64, usize)> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = *b.get(at)?;
        at += 1;
        v |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte < 0x80 {
            return Some((v, at));
        }
        shift += 7;
    }
}

/// The varint at the front of `r`, read a byte at a time (give it a buffered reader), as
/// `read` reads one from a slice: records read back from a file one by one
/// (`tcp::kept`). An error if `r` ends within it, or past 64 bits.
pub fn read_from(r: &mut impl std::io::Read) -> std::io::Result<u64> {
    let mut v = 0u64;
    let mut shift = 0u32;
    loop {
        let mut byte = [0u8];
        r.read_exact(&mut byte)?;
        v |= u64::from(byte[0] & 0x7f)
            .checked_shl(shift)
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "a varint past 64 bits")
            })?;
        if byte[0] < 0x80 {
            return Ok(v);
        }
        shift += 7;
    }
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_back_and_take_the_bytes_len_says() {
        let values = [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ];
        for v in values {
            let mut b = vec![0xff];
            push(&mut b, v);
            assert_eq!(b.len() - 1, len(v), "{v}");
            assert_eq!(read(&b, 1), Some((v, b.len())), "{v}");
            assert_eq!(read_from(&mut &b[1..]).unwrap(), v, "{v}");
            // Cut short: nothing.
            assert_eq!(read(&b[..b.len() - 1], 1), None, "{v}");
            assert!(read_from(&mut &b[1..b.len() - 1]).is_err(), "{v}");
        }
        for v in [0i64, 1, -1, 63, -64, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        // Eleven continuation bytes: past 64 bits.
        assert_eq!(read(&[0x80; 11], 0), None);
        assert!(read_from(&mut &[0x80; 11][..]).is_err());
    }
}

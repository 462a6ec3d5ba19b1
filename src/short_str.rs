//! A short string kept inline: the ids every connection carries (its uid, its lined-up id),
//! which as `String`s were an allocation each, ~40 bytes with the allocator's header, for every
//! connection of a capture.

/// Up to `N` bytes of text, inline. Longer text is cut at a character boundary (the ids it
/// holds are ASCII and far shorter).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShortStr<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> ShortStr<N> {
    pub fn new(s: &str) -> Self {
        let mut end = s.len().min(N).min(u8::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0; N];
        bytes[..end].copy_from_slice(&s.as_bytes()[..end]);
        ShortStr {
            len: end as u8,
            bytes,
        }
    }

    /// `bytes` if they are ASCII and fit, else `None`: what `new` makes of them, without the
    /// UTF-8 validation (the uids a digest reads back, for every lined-up connection the rules
    /// make as they read: 41 M instructions of the 200 MB synth's diagnosis).
    pub fn from_ascii(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > N.min(u8::MAX as usize) || !bytes.is_ascii() {
            return None;
        }
        let mut b = [0; N];
        b[..bytes.len()].copy_from_slice(bytes);
        Some(ShortStr {
            len: bytes.len() as u8,
            bytes: b,
        })
    }

    pub fn as_str(&self) -> &str {
        // Cut at a character boundary of valid UTF-8 (`new`).
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl<const N: usize> std::ops::Deref for ShortStr<N> {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> std::fmt::Display for ShortStr<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> std::fmt::Debug for ShortStr<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> serde::Serialize for ShortStr<N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// In the text's order, as a `String`'s.
impl<const N: usize> Ord for ShortStr<N> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl<const N: usize> PartialOrd for ShortStr<N> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<const N: usize> PartialEq<str> for ShortStr<N> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl<const N: usize> PartialEq<&str> for ShortStr<N> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl<const N: usize> PartialEq<String> for ShortStr<N> {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl<const N: usize> maud::Render for ShortStr<N> {
    fn render_to(&self, buffer: &mut String) {
        self.as_str().render_to(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::ShortStr;

    #[test]
    fn keeps_short_text_and_cuts_long_text_at_a_character() {
        assert_eq!(ShortStr::<8>::new("L12").as_str(), "L12");
        assert_eq!(ShortStr::<4>::new("L123456").as_str(), "L123");
        // "é" is two bytes: cutting after 3 would split it.
        assert_eq!(ShortStr::<3>::new("abé").as_str(), "ab");
        assert!(ShortStr::<8>::new("L1") < ShortStr::<8>::new("L2"));
        assert!(
            ShortStr::<8>::new("L10") < ShortStr::<8>::new("L2"),
            "as strings sort"
        );
    }

    #[test]
    fn ascii_that_fits_is_taken_as_new_takes_it() {
        for s in ["", "L1", "C0123456789abcdef", "abcd"] {
            assert_eq!(
                ShortStr::<4>::from_ascii(s.as_bytes()).is_some(),
                s.len() <= 4
            );
        }
        let uid = "CmZs5d2XIhRDaUjGd";
        assert_eq!(
            ShortStr::<18>::from_ascii(uid.as_bytes()),
            Some(ShortStr::<18>::new(uid))
        );
        assert_eq!(ShortStr::<8>::from_ascii("abé".as_bytes()), None);
        assert_eq!(ShortStr::<8>::from_ascii(&[b'a', 0xff]), None);
    }
}

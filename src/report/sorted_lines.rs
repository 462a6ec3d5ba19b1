//! Lines written in the order their connections end, printed in the order they started: the
//! text goes to an unnamed temporary file as it comes, and only a 32-byte key a line stays in
//! memory (`flows --format json`, and the flows table's rows, `FlowRows`). Kept in memory, the connections (or their lines: ~2 KB of
//! JSON each) grew with the capture: 360 MiB for the 2 GB synth's 93 000 connections, against
//! 137 for the same lines streamed (`--stream`). This is what `sort` does with more input
//! than memory.
//!
//! Without a temporary file (no writable `TMPDIR`), the text stays in memory instead, and the
//! output is the same.
//!
//! The lines of one capture's connections still live at its end come last and already in
//! start order (`pipeline::stream_capture_mapped`'s flag): `push_at_end` writes each out at
//! once, after the lines before it, instead of through the file (20 000 of the 26 500 lines
//! of issue 8's 200 MB synth, 38 of its 50 MB).

use std::fs::File;
use std::io::{self, BufWriter, Write};

use crate::capture::Timestamp;

/// The lines so far, and where each one's text is.
pub struct SortedLines {
    store: Store,
    /// Bytes written so far: the next line's offset.
    len: u64,
    lines: Vec<Line>,
    /// Once a line of the end came (`push_at_end`): `lines` sorted, and how many of them are
    /// written out.
    written: Option<usize>,
}

enum Store {
    File(BufWriter<File>),
    Memory(Vec<u8>),
}

/// A line: what it sorts by, and where its text is.
struct Line {
    ts: Timestamp,
    first_frame: u64,
    offset: u64,
    len: u32,
    /// The capture's index on the command line: lines of different captures that tie go in its
    /// order.
    capture: u32,
}

const _: () = assert!(std::mem::size_of::<Line>() <= 32);

impl Line {
    /// What the lines are sorted by.
    fn key(&self) -> (Timestamp, u64, u32) {
        (self.ts, self.first_frame, self.capture)
    }
}

impl Default for SortedLines {
    fn default() -> Self {
        Self::new()
    }
}

impl SortedLines {
    pub fn new() -> Self {
        let store = match tempfile::tempfile() {
            Ok(f) => Store::File(BufWriter::with_capacity(1 << 16, f)),
            Err(_) => Store::Memory(Vec::new()),
        };
        SortedLines {
            store,
            len: 0,
            lines: Vec::new(),
            written: None,
        }
    }

    /// The text kept in memory, as without a temporary file.
    pub fn in_memory() -> Self {
        SortedLines {
            store: Store::Memory(Vec::new()),
            len: 0,
            lines: Vec::new(),
            written: None,
        }
    }

    /// Adds a line (without its newline) of a connection that started at `ts` in frame
    /// `first_frame` of capture `capture`.
    pub fn push(
        &mut self,
        ts: Timestamp,
        first_frame: u64,
        capture: usize,
        line: &str,
    ) -> io::Result<()> {
        if self.written.is_some() {
            // Written out already, the lines that start after it could not go before it.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a line after the lines of the end",
            ));
        }
        let len = u32::try_from(line.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a line over 4 GB"))?;
        match &mut self.store {
            Store::File(f) => f.write_all(line.as_bytes())?,
            Store::Memory(v) => v.extend_from_slice(line.as_bytes()),
        }
        self.lines.push(Line {
            ts,
            first_frame,
            offset: self.len,
            len,
            capture: capture as u32,
        });
        self.len += u64::from(len);
        Ok(())
    }

    /// Adds the line of a connection still live at the end of the only capture (after which no
    /// `push` comes: those lines come last, in start order) and hands it to `f`, after the lines
    /// pushed before it that start before it (or at the same time and frame: they came first,
    /// as the sort keeps them).
    pub fn push_at_end(
        &mut self,
        ts: Timestamp,
        first_frame: u64,
        capture: usize,
        line: &str,
        f: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let from = match self.written {
            Some(n) => n,
            None => {
                self.sort_for_reading(true)?;
                // Sorted from now on, none written yet.
                self.written = Some(0);
                0
            }
        };
        let key = (ts, first_frame, capture as u32);
        let upto = from + self.lines[from..].partition_point(|l| l.key() <= key);
        self.hand_over(from..upto, f)?;
        self.written = Some(upto);
        f(line.as_bytes())
    }

    /// `lines` sorted if `sort` (stable: lines that tie on all three, none should, keep the
    /// order they came in), and the file's buffered text written, for `hand_over` to read.
    fn sort_for_reading(&mut self, sort: bool) -> io::Result<()> {
        if sort {
            self.lines.sort_by_key(Line::key);
        }
        match &mut self.store {
            Store::File(w) => w.flush(),
            Store::Memory(_) => Ok(()),
        }
    }

    /// The lines in `range` of `lines`, in that order, to `f`: each read in place, or with one
    /// `pread` from the file (a seek and a read were two system calls, 26 500 lines on issue
    /// 8's 200 MB synth).
    fn hand_over(
        &self,
        range: std::ops::Range<usize>,
        f: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let lines = &self.lines[range];
        match &self.store {
            Store::Memory(text) => {
                for l in lines {
                    let at = l.offset as usize;
                    f(&text[at..at + l.len as usize])?;
                }
            }
            Store::File(w) => {
                let mut buf = Vec::new();
                for l in lines {
                    buf.resize(l.len as usize, 0);
                    crate::tcp::spill::read_at(w.get_ref(), &mut buf, l.offset)?;
                    f(&buf)?;
                }
            }
        }
        Ok(())
    }

    /// Hands every line to `f`: by start time, then first frame, then capture if `sort`, else
    /// in the order they came (after `push_at_end`, the rest of the sorted lines).
    pub fn for_each(
        mut self,
        sort: bool,
        f: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let from = match self.written {
            Some(n) => n,
            None => {
                self.sort_for_reading(sort)?;
                0
            }
        };
        self.hand_over(from..self.lines.len(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(mut s: SortedLines, items: &[(i64, u64, usize, &str)]) -> String {
        for &(ts, frame, capture, text) in items {
            s.push(Timestamp(ts), frame, capture, text).unwrap();
        }
        let mut out = Vec::new();
        s.for_each(true, &mut |line| {
            out.extend_from_slice(line);
            out.push(b'\n');
            Ok(())
        })
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    /// By start, then first frame, then capture; the same from the file and from memory.
    #[test]
    fn lines_come_out_in_start_order_from_the_file_or_memory() {
        let items = [
            (30, 1, 0, "c"),
            (10, 9, 1, "b, capture 1"),
            (10, 9, 0, "b, capture 0"),
            (10, 2, 0, "a"),
            (40, 5, 0, ""),
            (20, 3, 1, "é, not ASCII"),
        ];
        let want = "a\nb, capture 0\nb, capture 1\né, not ASCII\nc\n\n";
        let file = SortedLines::new();
        assert!(matches!(file.store, Store::File(_)), "a temporary file");
        assert_eq!(lines(file, &items), want);
        assert_eq!(lines(SortedLines::in_memory(), &items), want);
    }

    /// Lines of the end (`push_at_end`) interleave with those pushed before them as one sort of
    /// all of them would: each goes out after the earlier lines that start before it or at its
    /// time and frame (they came first), and the rest follow; from the file or memory. A push
    /// after them is refused (it could belong before a line already out).
    #[test]
    fn lines_of_the_end_go_out_among_the_others_as_sorted() {
        let early = [
            (30, 1, "c"),
            (10, 2, "a"),
            (25, 4, "b2, ties the end's b2"),
            (50, 1, "e"),
            (20, 3, "b"),
        ];
        let end = [
            (5, 9, "first of all"),
            (25, 4, "b2 of the end"),
            (40, 7, "d"),
            (45, 1, "d2"),
        ];
        let want = "first of all\na\nb\nb2, ties the end's b2\nb2 of the end\nc\nd\nd2\ne\n";
        for mut s in [SortedLines::new(), SortedLines::in_memory()] {
            for &(ts, frame, text) in &early {
                s.push(Timestamp(ts), frame, 0, text).unwrap();
            }
            let mut out = Vec::new();
            let mut take = |l: &[u8]| {
                out.extend_from_slice(l);
                out.push(b'\n');
                Ok(())
            };
            for &(ts, frame, text) in &end {
                s.push_at_end(Timestamp(ts), frame, 0, text, &mut take)
                    .unwrap();
            }
            assert!(s.push(Timestamp(60), 1, 0, "late").is_err());
            s.for_each(true, &mut take).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }
}

//! Records written as they come to an unnamed temporary file, in blocks of `BLOCK` bytes: what
//! a one-capture diagnosis keeps of its finished connections (their digests, read back once,
//! `digest::DigestStore`; those a rule may end, whole, read one at a time when asked for,
//! `kept::KeptStore`), and what a two-capture one keeps (packet samples; live connections'
//! complete heads of them, read back when they end, `Spill::read_back`; the connections that
//! ended, read back once when tracking ends, `Spill::drain`) while the live ones need the
//! memory. Without a temporary file (no writable `TMPDIR`), or once a write fails, the blocks
//! stay in memory.

/// The blocks, in the file or in memory.
#[derive(Default)]
pub struct Spill {
    pub(super) file: Option<std::fs::File>,
    /// Bytes the file holds, every one a whole record.
    pub(super) written: u64,
    /// The block being filled, then the blocks kept in memory.
    pub(super) block: Vec<u8>,
    pub(super) blocks: Vec<Vec<u8>>,
    /// Bytes in `blocks`: `pending` is asked at every record a store keeps (`kept::KeptStore`
    /// gives each its offset), and the blocks can be many without a file.
    pub(super) in_blocks: usize,
    /// A write to the file failed: what it held stays readable (`written` bytes), and every
    /// block from then on stays in memory. Dropped at the failure, the file lost the records
    /// it held without a word.
    pub(super) failed: bool,
}

pub const BLOCK: usize = 64 * 1024;

impl Spill {
    /// One that writes to a temporary file if one can be made.
    pub fn new() -> Self {
        Spill {
            file: tempfile::tempfile().ok(),
            ..Self::default()
        }
    }

    /// Writes `rec` as a record (its length, a varint, then its bytes: what `seal` and
    /// `Sealed::record` read) and gives where its bytes start. Nothing is read back before
    /// `seal`: what the spill holds is where the record starts.
    pub fn write_record(&mut self, rec: &[u8]) -> u64 {
        crate::varint::push(&mut self.block, rec.len() as u64);
        let at = self.pending() as u64;
        self.block.extend_from_slice(rec);
        self.wrote();
        at
    }

    /// The `len` bytes of the record whose bytes start at `at`, read back before `seal`: from
    /// the file, or from the blocks in memory (`write_record` made them; a record is never
    /// split between two, `wrote`). Not checked as `seal` checks: the caller reads what it
    /// wrote in this run.
    pub fn read_back(&self, at: u64, len: u32) -> std::io::Result<Vec<u8>> {
        let mut rec = vec![0u8; len as usize];
        let blocks = self.blocks.iter().chain([&self.block]).map(Vec::as_slice);
        read_written(self.file.as_ref(), self.written, blocks, at, &mut rec)?;
        Ok(rec)
    }

    /// Where the next record is written, whole; then `wrote`.
    pub fn block(&mut self) -> &mut Vec<u8> {
        &mut self.block
    }

    /// A record was written to `block`: a full block goes to the file.
    pub fn wrote(&mut self) {
        if self.block.len() >= BLOCK {
            self.flush();
        }
    }

    /// The block to the file, or, if that fails, to memory for good (the file keeps what it
    /// had: `written` bytes, still read back).
    pub(super) fn flush(&mut self) {
        use std::io::Write as _;
        let block = std::mem::take(&mut self.block);
        if let Some(f) = self.file.as_mut().filter(|_| !self.failed) {
            if f.write_all(&block).is_ok() {
                self.written += block.len() as u64;
                self.block = block;
                self.block.clear();
                return;
            }
            // A write cut short may have left part of the block after `written`: never read.
            self.failed = true;
        }
        self.in_blocks += block.len();
        self.blocks.push(block);
        self.block = Vec::with_capacity(BLOCK + 256);
    }

    /// Bytes not read back yet: before anything is, where the next record starts.
    pub fn pending(&self) -> usize {
        self.written as usize + self.in_blocks + self.block.len()
    }

    /// The file, at its start, and the bytes of whole records it holds, if it holds any: read
    /// them back from it. Later records stay in memory.
    pub fn take_file(&mut self) -> Option<(std::io::Result<std::fs::File>, u64)> {
        use std::io::Seek as _;
        let written = std::mem::take(&mut self.written);
        let mut f = self.file.take().filter(|_| written > 0)?;
        Some((f.seek(std::io::SeekFrom::Start(0)).map(|_| f), written))
    }

    /// For tests: the bytes written to the temporary file, if there is one.
    #[cfg(test)]
    pub(crate) fn on_disk(&self) -> Option<u64> {
        self.file.as_ref().map(|_| self.written)
    }

    /// For tests: the block to the file, then the file cut to half what it holds, as a disk
    /// that lost its end would leave it.
    #[cfg(test)]
    pub(super) fn cut_file_in_half(&mut self) {
        self.flush();
        let f = self.file.as_ref().expect("a temporary file");
        f.set_len(self.written / 2).expect("cut");
    }

    /// Writing is over: the records as written, read back at their offsets (`Sealed::read`).
    /// Those in the file are checked once here, each handed to `check` (false for one that
    /// does not decode): a record that does not (the file changed or cut short under us) ends
    /// what the file is trusted with (`Sealed::valid`), and is the error returned. Those in
    /// memory were written whole.
    pub fn seal(
        &mut self,
        check: &mut dyn FnMut(&[u8]) -> bool,
    ) -> (Sealed, Option<std::io::Error>) {
        let mut sealed = self.seal_unread();
        let error = match sealed.file.as_ref() {
            Some(mut f) => {
                let read = match std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0)) {
                    Ok(_) => read_records(f, sealed.written, check),
                    Err(e) => Err((0, e)),
                };
                read.err().map(|(at, e)| {
                    sealed.valid = at;
                    e
                })
            }
            None => None,
        };
        (sealed, error)
    }

    /// Writing is over: the file, the bytes it holds, and the blocks in memory after it (the
    /// one being filled last); the spill is left empty.
    fn take_all(&mut self) -> (Option<std::fs::File>, u64, Vec<Vec<u8>>) {
        let Spill {
            file,
            written,
            block,
            mut blocks,
            ..
        } = std::mem::take(self);
        blocks.push(block);
        (file, written, blocks)
    }

    /// Writing is over, and every record is wanted once, in the order written: each handed to
    /// `one` (false for one that does not decode), the file's read a block at a time, then
    /// those in memory; the spill is left empty. A record of the file that does not read
    /// whole, or that `one` refuses, ends what is read from the file, and is the error
    /// returned (the records in memory are still read).
    pub fn drain(&mut self, one: &mut dyn FnMut(&[u8]) -> bool) -> Option<std::io::Error> {
        let (file, written, blocks) = self.take_all();
        let mut error = None;
        if let Some(mut f) = file.filter(|_| written > 0) {
            let read = match std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0)) {
                Ok(_) => read_records(&f, written, one).map_err(|(_, e)| e),
                Err(e) => Err(e),
            };
            error = read.err();
        }
        for b in &blocks {
            // Written whole by this program: an error only if memory was corrupted.
            if let Err((_, e)) = read_records(b.as_slice(), b.len() as u64, one) {
                error.get_or_insert(e);
            }
        }
        error
    }

    /// Writing is over: the records as written, every one taken as whole, for a reader that
    /// checks them itself as it walks them (`Sealed::scan`: records without a length, which
    /// `seal` cannot check).
    pub fn seal_unread(&mut self) -> Sealed {
        let (file, written, mut blocks) = self.take_all();
        blocks.retain(|b| !b.is_empty());
        blocks.iter_mut().for_each(Vec::shrink_to_fit);
        // The blocks' offsets run on from the file's end: they count only after a whole file.
        let whole = written + blocks.iter().map(|b| b.len() as u64).sum::<u64>();
        Sealed {
            file: file.filter(|_| written > 0),
            written,
            blocks,
            valid: whole,
        }
    }

    /// The blocks kept in memory, then the one being filled, each whole records, taken (after
    /// `take_file`: they come after the file's).
    pub fn take_blocks(&mut self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.in_blocks = 0;
        self.blocks
            .drain(..)
            .chain([std::mem::take(&mut self.block)])
    }
}

/// A spill's records once written (`Spill::seal`): in its temporary file, then in memory
/// (blocks written without one, or after a write to it failed). Each record is its length (a
/// varint) and its bytes; a reader keeps where each record's bytes start and how many.
#[derive(Default)]
pub struct Sealed {
    file: Option<std::fs::File>,
    /// Bytes in the file; the blocks' offsets run on from here.
    written: u64,
    blocks: Vec<Vec<u8>>,
    /// Records wholly before this offset decoded when sealed.
    valid: u64,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("on_disk", &self.written)
            .field(
                "in_memory",
                &self.blocks.iter().map(Vec::len).sum::<usize>(),
            )
            .field("valid", &self.valid)
            .finish()
    }
}

impl Sealed {
    /// Whether the `len` bytes at `at` are here and were read back whole when sealed.
    pub fn holds(&self, at: u64, len: u32) -> bool {
        at.saturating_add(u64::from(len)) <= self.valid
    }

    /// For tests: every record, in the file and in memory, was read back whole when sealed.
    #[cfg(test)]
    pub(super) fn every_record_valid(&self) -> bool {
        self.valid == self.written + self.blocks.iter().map(|b| b.len() as u64).sum::<u64>()
    }

    /// The `len` bytes of the record whose bytes start at `at` (`Spill::write_record`), if the
    /// store `holds` them.
    pub fn record(&self, at: u64, len: u32) -> std::io::Result<Vec<u8>> {
        if !self.holds(at, len) {
            return Err(invalid(&format!("a record at byte {at}")));
        }
        let mut rec = vec![0u8; len as usize];
        self.read(at, &mut rec)?;
        Ok(rec)
    }

    /// The `buf.len()` bytes at `at`.
    pub fn read(&self, at: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let blocks = self.blocks.iter().map(Vec::as_slice);
        read_written(self.file.as_ref(), self.written, blocks, at, buf)
    }
}

/// The `buf.len()` bytes at `at` of what a spill wrote: its file's first `written` bytes, then
/// `blocks` in memory, in order.
fn read_written<'b>(
    file: Option<&std::fs::File>,
    written: u64,
    blocks: impl Iterator<Item = &'b [u8]>,
    at: u64,
    buf: &mut [u8],
) -> std::io::Result<()> {
    match (at.checked_sub(written), file) {
        (None, Some(file)) => read_at(file, buf, at),
        (None, None) => Err(invalid("the temporary file")),
        (Some(off), _) => {
            // The block that holds it: records never straddle two (`Spill::wrote`).
            let mut blocks = blocks;
            let mut off = off as usize;
            let b = blocks.find_map(|b| match b.get(off..) {
                Some(rest) if !rest.is_empty() => Some(rest),
                _ => {
                    off -= b.len();
                    None
                }
            });
            let b = b.and_then(|b| b.get(..buf.len()));
            buf.copy_from_slice(b.ok_or_else(|| invalid("a record kept in memory"))?);
            Ok(())
        }
    }
}

impl Sealed {
    /// Each record and its offset, in order, for records written without their length
    /// (`Spill::seal_unread`): `end` says where the record at the start of its bytes ends, or
    /// `None` if they do not hold it whole. The file is read a block at a time, up to its first
    /// record that does not read whole (an error then says what was lost); then the blocks in
    /// memory.
    pub fn scan(
        &self,
        end: &dyn Fn(&[u8]) -> Option<usize>,
        one: &mut dyn FnMut(u64, &[u8]),
    ) -> Option<std::io::Error> {
        let error = match &self.file {
            Some(f) => self.scan_file(f, end, one).err(),
            None if self.written > 0 => Some(invalid("the temporary file")),
            None => None,
        };
        let mut base = self.written;
        for b in &self.blocks {
            each_whole(b, base, end, one);
            base += b.len() as u64;
        }
        error
    }

    fn scan_file(
        &self,
        f: &std::fs::File,
        end: &dyn Fn(&[u8]) -> Option<usize>,
        one: &mut dyn FnMut(u64, &[u8]),
    ) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(2 * BLOCK);
        // The file's offset of `buf[0]`, and of the next byte to read.
        let (mut base, mut next) = (0u64, 0u64);
        loop {
            let at = each_whole(&buf, base, end, one);
            buf.drain(..at);
            base += at as u64;
            if next == self.written {
                if buf.is_empty() {
                    return Ok(());
                }
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{base} of {} bytes read back", self.written),
                ));
            }
            let n = (self.written - next).min(BLOCK as u64) as usize;
            let old = buf.len();
            buf.resize(old + n, 0);
            read_at(f, &mut buf[old..], next)?;
            next += n as u64;
        }
    }
}

/// The whole records at the start of `bytes` (`end` says where each ends), each with its
/// offset (`base` is that of `bytes[0]`); how many bytes they took.
fn each_whole(
    bytes: &[u8],
    base: u64,
    end: &dyn Fn(&[u8]) -> Option<usize>,
    one: &mut dyn FnMut(u64, &[u8]),
) -> usize {
    let mut at = 0;
    while let Some(n) = end(&bytes[at..]) {
        one(base + at as u64, &bytes[at..at + n]);
        at += n;
    }
    at
}

/// `buf.len()` bytes of `f` from `at`: one call where the system reads at an offset.
#[cfg(unix)]
pub(crate) fn read_at(f: &std::fs::File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, at)
}

#[cfg(not(unix))]
pub(crate) fn read_at(f: &std::fs::File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    use std::io::{Read as _, Seek as _};
    let mut f = f;
    f.seek(std::io::SeekFrom::Start(at))?;
    f.read_exact(buf)
}

pub(crate) fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{what} did not decode"),
    )
}

/// The records of the first `len` bytes of `f`, one at a time (a buffer of the whole file
/// would sit beside what is decoded from it), each handed to `one`, which is false for one
/// that does not decode. An error comes with the offset of the first record not read whole.
pub(super) fn read_records(
    f: impl std::io::Read,
    len: u64,
    one: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<(), (u64, std::io::Error)> {
    use std::io::{BufRead as _, Read as _};
    let mut from = std::io::BufReader::with_capacity(BLOCK, f.take(len));
    let mut rec = Vec::new();
    let mut at = 0u64;
    loop {
        let bad = || invalid(&format!("the record at byte {at} of the temporary file"));
        match from.fill_buf() {
            Ok([]) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err((at, e)),
        }
        let n = crate::varint::read_from(&mut from).map_err(|e| (at, e))?;
        if n > len {
            return Err((at, bad()));
        }
        rec.resize(n as usize, 0);
        from.read_exact(&mut rec).map_err(|e| (at, e))?;
        if !one(&rec) {
            return Err((at, bad()));
        }
        at += crate::varint::len(n) as u64 + n;
    }
}

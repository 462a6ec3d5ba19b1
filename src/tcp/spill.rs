//! Records written as they come to an unnamed temporary file, in blocks of `BLOCK` bytes: what
//! a one-capture diagnosis keeps of its finished connections (their digests, read back once,
//! `digest::DigestStore`; those a rule may end, whole, read one at a time when asked for,
//! `kept::KeptStore`) while the live ones need the memory. Without a temporary file (no
//! writable `TMPDIR`), or once a write fails, the blocks stay in memory.

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

    /// For tests: the block to the file, then the file cut to half what it holds, as a disk
    /// that lost its end would leave it.
    #[cfg(test)]
    pub(super) fn cut_file_in_half(&mut self) {
        self.flush();
        let f = self.file.as_ref().expect("a temporary file");
        f.set_len(self.written / 2).expect("cut");
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

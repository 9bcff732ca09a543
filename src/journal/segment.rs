//! Segment files of the capture log: naming, listing, finding the valid end of the
//! last one after a crash, and reading frames back by log position.
//!
//! A segment is named after the log position of its first byte (`<20 digits>.log`);
//! positions count frame bytes since the log began and never go back, so a
//! position names one byte of one segment for as long as that segment exists.

use super::format::{self, FrameCheck};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const SUFFIX: &str = ".log";
/// Bytes read at a time when scanning or replaying a segment.
const READ_CHUNK: usize = 4 << 20;

pub fn path_of(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}{SUFFIX}"))
}

/// Start positions of the segments in `dir`, oldest first. Other files are ignored.
pub fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut starts = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if let Some(start) = name
            .strip_suffix(SUFFIX)
            .filter(|digits| digits.len() == 20)
            .and_then(|digits| digits.parse::<u64>().ok())
        {
            starts.push(start);
        }
    }
    starts.sort_unstable();
    Ok(starts)
}

/// Length of the valid prefix of a segment: every frame whole and its CRC right.
/// Whatever follows (a torn last write, or garbage) is not part of the log.
pub fn valid_len(file: &File) -> io::Result<(u64, usize)> {
    let len = file.metadata()?.len();
    let mut at = 0u64;
    let mut frames = 0usize;
    let mut buf = Vec::new();
    while at < len {
        let want = (len - at).min(READ_CHUNK as u64) as usize;
        buf.resize(want, 0);
        file.read_exact_at(&mut buf, at)?;
        let mut offset = 0usize;
        loop {
            match format::check_frame(&buf[offset..]) {
                FrameCheck::Whole(n) => {
                    offset += n;
                    frames += 1;
                }
                FrameCheck::Corrupt => return Ok((at + offset as u64, frames)),
                FrameCheck::Short => break,
            }
        }
        if offset > 0 {
            // Read on from the first frame that did not fit in this chunk.
            at += offset as u64;
            continue;
        }
        // Not even the first frame fits: a torn tail, or a frame larger than a chunk.
        let Some(need) = format::declared_len(&buf) else {
            return Ok((at, frames));
        };
        if need <= buf.len() || at + need as u64 > len {
            return Ok((at, frames));
        }
        let mut frame = vec![0u8; need];
        file.read_exact_at(&mut frame, at)?;
        match format::check_frame(&frame) {
            FrameCheck::Whole(n) => {
                at += n as u64;
                frames += 1;
            }
            _ => return Ok((at, frames)),
        }
    }
    Ok((at, frames))
}

/// What reading at a position found.
pub enum Read {
    /// A whole frame: its bytes (header included).
    Frame(Vec<u8>),
    /// Nothing valid at this position in this segment (corrupt or past its end).
    End,
}

/// Reads frames of one segment sequentially, a chunk at a time.
pub struct SegmentReader {
    file: File,
    /// Log position of the segment's first byte.
    pub start: u64,
    buf: Vec<u8>,
    /// Log position of `buf[0]`.
    buf_at: u64,
}

impl SegmentReader {
    pub fn open(dir: &Path, start: u64) -> io::Result<SegmentReader> {
        Ok(SegmentReader {
            file: File::open(path_of(dir, start))?,
            start,
            buf: Vec::new(),
            buf_at: start,
        })
    }

    /// The frame at log position `at`, reading no byte at or past `until`.
    pub fn read(&mut self, at: u64, until: u64) -> io::Result<Read> {
        if at < self.start || at >= until {
            return Ok(Read::End);
        }
        let in_buf = at >= self.buf_at && at < self.buf_at + self.buf.len() as u64;
        if in_buf {
            let offset = (at - self.buf_at) as usize;
            if let FrameCheck::Whole(n) = format::check_frame(&self.buf[offset..]) {
                if at + n as u64 <= until {
                    return Ok(Read::Frame(self.buf[offset..offset + n].to_vec()));
                }
            }
        }
        // Refill from `at`: up to a chunk, never past `until` (bytes beyond it may
        // still be being written).
        let want = (until - at).min(READ_CHUNK as u64) as usize;
        self.buf.resize(want, 0);
        let got = read_up_to(&self.file, &mut self.buf, at - self.start)?;
        self.buf.truncate(got);
        self.buf_at = at;
        match format::check_frame(&self.buf) {
            FrameCheck::Whole(n) => Ok(Read::Frame(self.buf[..n].to_vec())),
            FrameCheck::Corrupt => Ok(Read::End),
            FrameCheck::Short => {
                let Some(need) = format::declared_len(&self.buf) else {
                    return Ok(Read::End);
                };
                if need <= self.buf.len() || at + need as u64 > until {
                    return Ok(Read::End);
                }
                let mut frame = vec![0u8; need];
                let got = read_up_to(&self.file, &mut frame, at - self.start)?;
                match (got == need, format::check_frame(&frame)) {
                    (true, FrameCheck::Whole(_)) => Ok(Read::Frame(frame)),
                    _ => Ok(Read::End),
                }
            }
        }
    }
}

/// Reads as much of `buf` as the file holds from `offset`; returns how much.
fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

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

/// What a scan of a whole segment found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// End of the last whole frame: what follows it (a torn last write, or
    /// garbage) is not part of the log.
    pub valid: u64,
    /// Whole frames found.
    pub frames: usize,
    /// Damaged stretches (segment offsets, end exclusive) with whole frames after
    /// them: damage in the middle of the log, not a crash's torn tail.
    pub damaged: Vec<(u64, u64)>,
}

/// Scans a segment frame by frame. A damaged frame followed by whole ones is
/// stepped over (only the damage is lost); one with nothing whole after it ends
/// the valid part.
pub fn scan(file: &File) -> io::Result<Scan> {
    let len = file.metadata()?.len();
    let mut out = Scan::default();
    let mut at = 0u64;
    while at < len {
        match frame_at(file, at, len)? {
            Some(n) => {
                at += n as u64;
                out.frames += 1;
            }
            None => match next_whole_frame(file, at + 1, len)? {
                Some(next) => {
                    out.damaged.push((at, next));
                    at = next;
                }
                None => break,
            },
        }
    }
    out.valid = at;
    Ok(out)
}

/// The length of the whole frame at segment offset `at`, reading nothing at or
/// past `limit`; `None` when there is none.
fn frame_at(file: &File, at: u64, limit: u64) -> io::Result<Option<usize>> {
    let mut head = [0u8; format::FRAME_HEADER + 1];
    let got = read_up_to(file, &mut head, at)?;
    let Some(need) = format::plausible_start(&head[..got], limit - at) else {
        return Ok(None);
    };
    let mut frame = vec![0u8; need];
    let got = read_up_to(file, &mut frame, at)?;
    Ok((got == need && format::check_frame(&frame) == FrameCheck::Whole(need)).then_some(need))
}

/// The first segment offset at or after `from` (and before `limit`) where a whole
/// frame starts: where reading resumes after a damaged frame. Most offsets fail
/// the length and flags test, so only a few are checked by CRC.
pub fn next_whole_frame(file: &File, from: u64, limit: u64) -> io::Result<Option<u64>> {
    let mut buf = Vec::new();
    let mut at = from;
    while at < limit {
        let want = (limit - at).min(READ_CHUNK as u64) as usize;
        buf.resize(want, 0);
        let got = read_up_to(file, &mut buf, at)?;
        buf.truncate(got);
        if got == 0 {
            return Ok(None);
        }
        // Offsets whose header the chunk cuts are tested from the next chunk.
        let last = got < want || at + got as u64 >= limit;
        let testable = if last {
            got
        } else {
            got - format::FRAME_HEADER
        };
        for i in 0..testable {
            let here = at + i as u64;
            let Some(need) = format::plausible_start(&buf[i..], limit - here) else {
                continue;
            };
            let whole = match buf.get(i..i + need) {
                Some(frame) => format::check_frame(frame) == FrameCheck::Whole(need),
                None => frame_at(file, here, limit)?.is_some(),
            };
            if whole {
                return Ok(Some(here));
            }
        }
        at += testable as u64;
    }
    Ok(None)
}

/// What reading at a position found.
pub enum Read {
    /// A whole frame: its bytes (header included).
    Frame(Vec<u8>),
    /// Nothing valid at this position in this segment (corrupt or past its end).
    End,
}

impl SegmentReader {
    /// The log position of the first whole frame after the damaged one at `at`,
    /// reading nothing at or past `until`.
    pub fn resync(&self, at: u64, until: u64) -> io::Result<Option<u64>> {
        let found = next_whole_frame(&self.file, at + 1 - self.start, until - self.start)?;
        Ok(found.map(|offset| self.start + offset))
    }
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

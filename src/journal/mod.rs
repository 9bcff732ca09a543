//! The capture log: every finished call, secrets already redacted, appended to
//! segment files under `data_dir/journal/` before the store sees it, so a crash of
//! the process loses no call whose record reached the log.
//!
//! One thread (`llmtap-log`) owns the appends. It takes everything the forward path
//! has queued (group commit), redacts and encodes each call (`format.rs`, sealed
//! with the store's keyring when encryption is on), writes the group with one
//! `write`, and then hands the decoded calls to the writer in memory with their log
//! positions. `fsync` runs on an interval (`store.journal_fsync_ms`) on a second
//! thread, so the interval bounds what a power loss can lose; a process crash loses
//! nothing once `write` returned, the kernel holds it.
//!
//! The writer consumes the log through a `Feed`: in order of position, from memory
//! while it keeps up, and from the segment files when it does not (the in-memory
//! handoff is bounded; past the bound the log thread hands over nothing and the
//! writer reads those records back from disk), and at start-up from the position
//! the store last applied. A segment is closed when it would pass 64 MiB or when its
//! first record is `SEGMENT_MAX_AGE` old, and segments wholly applied are deleted
//! once the store has flushed them (`retire`), so a busy log holds seconds of calls;
//! a quiet one is sealed and deleted by the writer (`seal`). The format and its
//! invariants are in ARCHITECTURE.md.

pub mod format;
mod segment;

use crate::capture::FinishedCall;
use crate::metrics::Metrics;
use crate::recorder::{self, RedactedCall};
use crate::store::Keyring;
use format::FormatError;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Calls waiting for the log thread beyond which new calls are not admitted (a
/// stalled disk must not turn into unbounded memory).
pub const MAX_QUEUED_CALLS: u64 = 20_000;
/// Default size at which the log starts a new segment.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Default age (since its first record) at which the log starts a new segment, so a
/// busy log is cut into segments the writer can retire once applied: stored calls
/// leave the disk seconds after they are stored, not when 64 MiB have been written.
pub const SEGMENT_MAX_AGE: Duration = Duration::from_secs(4);
/// Default bytes of decoded calls the log thread may hand to the writer in memory.
pub const HANDOFF_BYTES: u64 = 64 << 20;
/// Memory a handed-over call costs beyond its frame (struct, header map, boxes).
const HANDOFF_OVERHEAD: u64 = 512;
/// Most calls one group commit takes from the queue.
const MAX_GROUP: usize = 1024;
/// Captured bytes past which a group commit takes no more calls.
const MAX_GROUP_BYTES: usize = 8 << 20;

#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// The log's directory (`data_dir/journal`).
    pub dir: PathBuf,
    /// How often appended bytes are synced to the device; zero syncs every group.
    pub fsync_every: Duration,
    /// Seals every record when set (the store's keyring).
    pub keys: Option<Arc<Keyring>>,
    pub segment_bytes: u64,
    /// A segment holding records older than this is closed at the next append
    /// (`SEGMENT_MAX_AGE`), whatever its size.
    pub segment_max_age: Duration,
    pub handoff_bytes: u64,
    /// Secret header and query names beyond the built-in lists (redacted before encoding).
    pub redaction: crate::headers::Redaction,
    /// Largest decoded size of a compressed body read before an opted-out body is
    /// dropped (`[capture] max_decoded_bytes`).
    pub max_decoded: u64,
    /// Free space on the log's volume: below its critical level the log appends
    /// nothing (calls are forwarded, counted, not recorded) so it never fills the
    /// disk; it appends again once space is back (`store.critical_free_mb`).
    pub disk: Option<Arc<crate::store::DiskGuard>>,
}

impl JournalOptions {
    pub fn new(dir: PathBuf, fsync_every: Duration, keys: Option<Arc<Keyring>>) -> Self {
        JournalOptions {
            dir,
            fsync_every,
            keys,
            segment_bytes: SEGMENT_BYTES,
            segment_max_age: SEGMENT_MAX_AGE,
            handoff_bytes: HANDOFF_BYTES,
            redaction: crate::headers::Redaction::default(),
            max_decoded: crate::config::defaults::MAX_DECODED_BYTES,
            disk: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("the capture log in {dir} is in use by another llmtap process; stop that process or choose another --data-dir")]
    Locked { dir: String },
    #[error("capture log {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error(transparent)]
    Format(#[from] FormatError),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// An open log: where the forward path sends finished calls, the thread that
/// appends them, and the feed the writer reads.
pub struct Journal {
    pub sender: UnboundedSender<Box<FinishedCall>>,
    pub appender: JoinHandle<()>,
    pub feed: Feed,
}

/// One record as the writer gets it.
#[derive(Debug)]
pub struct Entry {
    /// Log position of the record's first byte, and of the byte after it.
    pub start: u64,
    pub end: u64,
    /// The process run that logged it (its start time, µs): round numbers are per run.
    pub run: u64,
    /// Read back from a segment rather than handed over in memory.
    pub from_disk: bool,
    pub call: RedactedCall,
}

enum Handoff {
    Call(Box<Entry>),
    /// Some records were not handed over; read them from disk (see `Shared::spilled_end`).
    Spilled,
}

struct Shared {
    dir: PathBuf,
    keys: Option<Arc<Keyring>>,
    metrics: Arc<Metrics>,
    /// End of the last record whose `write` returned.
    appended_end: AtomicU64,
    /// End of the last record not handed over in memory (the writer reads up to it
    /// from disk). Starts at the end of what earlier runs logged.
    spilled_end: AtomicU64,
    handoff_bytes: AtomicU64,
    handoff_limit: u64,
    spill_signal_pending: AtomicBool,
    /// Segment start positions, oldest first; the last one is being appended.
    segments: Mutex<Vec<u64>>,
    /// The segment being appended: the log thread holds it while it writes a
    /// group; the writer takes it to seal a wholly applied segment (`Feed::seal`).
    active: Mutex<Active>,
    /// The fsync thread's handle on the active segment, moved on each new segment.
    syncer: std::sync::OnceLock<Arc<Syncer>>,
    /// When the log thread last appended (µs since the epoch).
    last_append_us: AtomicU64,
    /// Where this run's records begin.
    run_start: u64,
    run: u64,
    /// Held for the life of the log: a second process on the directory is refused.
    _lock: File,
}

impl Shared {
    fn segments(&self) -> std::sync::MutexGuard<'_, Vec<u64>> {
        match self.segments.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn active(&self) -> std::sync::MutexGuard<'_, Active> {
        match self.active.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Starts a new segment at `at` (the end of what was appended): the old one is
    /// synced first, and the fsync thread follows the new one.
    fn start_segment(&self, active: &mut Active, at: u64) -> Result<(), JournalError> {
        let next = Active::create(&self.dir, at)?;
        if let Err(e) = active.file.sync_data() {
            tracing::error!(error = %e, "capture log: fsync failed");
        }
        if let Some(syncer) = self.syncer.get() {
            if let Ok(mut file) = syncer.file.lock() {
                *file = next.file.clone();
            }
        }
        self.segments().push(at);
        tracing::debug!(start = at, "capture log: new segment");
        *active = next;
        Ok(())
    }
}

/// Opens (or creates) the log in `options.dir`, cuts off a torn last record, and
/// starts the log thread.
pub fn open(options: JournalOptions, metrics: Arc<Metrics>) -> Result<Journal, JournalError> {
    let dir = options.dir.clone();
    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
    let lock_path = dir.join("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_error(&lock_path))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(JournalError::Locked {
            dir: dir.display().to_string(),
        });
    }
    let mut starts = segment::list(&dir).map_err(io_error(&dir))?;
    let mut end = 0u64;
    let mut tail: Option<(File, u64, u64)> = None;
    if let Some(&last) = starts.last() {
        let path = segment::path_of(&dir, last);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let scan = segment::scan(&file).map_err(io_error(&path))?;
        let valid = scan.valid;
        for (from, to) in &scan.damaged {
            // Not cut off: the whole records after the damage are kept, and the
            // feed steps over it (and counts it) when it reads this far.
            tracing::error!(
                segment = %path.display(),
                from,
                to,
                "capture log: damaged bytes in the middle of the log; the records after them are kept"
            );
        }
        let len = file.metadata().map_err(io_error(&path))?.len();
        if valid < len {
            tracing::warn!(
                segment = %path.display(),
                kept = valid,
                dropped = len - valid,
                "capture log: a torn or corrupt record at the end of the log is skipped"
            );
            Metrics::add(&metrics.log_torn);
            file.set_len(valid).map_err(io_error(&path))?;
            file.sync_all().map_err(io_error(&path))?;
        }
        end = last + valid;
        tail = Some((file, last, valid));
    }
    let active = match tail {
        Some((file, _, len)) if len < options.segment_bytes => Active {
            file: Arc::new(file),
            len,
            // Its records' age is unknown: they count as written now.
            first_append: (len > 0).then(std::time::Instant::now),
        },
        _ => {
            let active = Active::create(&dir, end)?;
            starts.push(end);
            active
        }
    };
    let run = crate::timefmt::now_unix_us();
    let shared = Arc::new(Shared {
        dir: dir.clone(),
        keys: options.keys.clone(),
        metrics: metrics.clone(),
        appended_end: AtomicU64::new(end),
        spilled_end: AtomicU64::new(end),
        handoff_bytes: AtomicU64::new(0),
        handoff_limit: options.handoff_bytes,
        spill_signal_pending: AtomicBool::new(false),
        segments: Mutex::new(starts.clone()),
        active: Mutex::new(active),
        syncer: std::sync::OnceLock::new(),
        last_append_us: AtomicU64::new(0),
        run_start: end,
        run,
        _lock: lock,
    });
    metrics.log_end.store(end, Ordering::Relaxed);
    metrics
        .log_applied
        .store(starts.first().copied().unwrap_or(end), Ordering::Relaxed);
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let (handoff_tx, handoff_rx) = mpsc::channel();
    let thread_shared = shared.clone();
    let appender = std::thread::Builder::new()
        .name("llmtap-log".into())
        .spawn(move || {
            let mut appender = Appender {
                shared: thread_shared,
                syncer: None,
                fsync_every: options.fsync_every,
                segment_bytes: options.segment_bytes,
                segment_max_age: options.segment_max_age,
                redaction: options.redaction,
                max_decoded: options.max_decoded,
                disk: options.disk.map(|guard| DiskWatch {
                    guard,
                    checked: None,
                    appended: 0,
                }),
                handoff: handoff_tx,
            };
            appender.run(receiver);
        })
        .map_err(io_error(&dir))?;
    tracing::info!(dir = %dir.display(), position = end, "capture log open");
    Ok(Journal {
        sender,
        appender,
        feed: Feed {
            shared,
            rx: handoff_rx,
            next: end,
            held: None,
            reader: None,
            closed: false,
            reread_until: 0,
        },
    })
}

/// The segment being appended.
struct Active {
    file: Arc<File>,
    len: u64,
    /// When its first record was written (None while it is empty).
    first_append: Option<std::time::Instant>,
}

impl Active {
    fn create(dir: &Path, start: u64) -> Result<Active, JournalError> {
        let path = segment::path_of(dir, start);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        // The new name must survive a power loss too.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(Active {
            file: Arc::new(file),
            len: 0,
            first_append: None,
        })
    }
}

/// Syncs the active segment every interval when something was written since.
struct Syncer {
    file: Mutex<Arc<File>>,
    dirty: AtomicBool,
    stop: AtomicBool,
}

impl Syncer {
    fn sync(&self) {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return;
        }
        let file = match self.file.lock() {
            Ok(f) => f.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if let Err(e) = file.sync_data() {
            tracing::error!(error = %e, "capture log: fsync failed");
        }
    }
}

struct Appender {
    shared: Arc<Shared>,
    syncer: Option<(Arc<Syncer>, JoinHandle<()>)>,
    fsync_every: Duration,
    segment_bytes: u64,
    segment_max_age: Duration,
    redaction: crate::headers::Redaction,
    max_decoded: u64,
    disk: Option<DiskWatch>,
    handoff: mpsc::Sender<Handoff>,
}

/// How often the log measures free space while appending, and while paused.
const DISK_CHECK_EVERY: Duration = Duration::from_secs(1);
const DISK_CHECK_PAUSED: Duration = Duration::from_millis(200);
/// Bytes appended after which free space is measured again whatever the time.
const DISK_CHECK_BYTES: u64 = 16 << 20;

/// The log's view of free space on its volume.
struct DiskWatch {
    guard: Arc<crate::store::DiskGuard>,
    checked: Option<std::time::Instant>,
    appended: u64,
}

impl DiskWatch {
    /// Whether the log must not append now: free space below the critical level.
    fn paused(&mut self, metrics: &Metrics) -> bool {
        let was = metrics.log_paused.load(Ordering::Relaxed) != 0;
        let every = if was {
            DISK_CHECK_PAUSED
        } else {
            DISK_CHECK_EVERY
        };
        let due = self.checked.is_none_or(|at| at.elapsed() >= every)
            || self.appended >= DISK_CHECK_BYTES;
        if !due {
            return was;
        }
        self.checked = Some(std::time::Instant::now());
        self.appended = 0;
        let paused = self.guard.check() == crate::store::DiskLevel::CapturePaused;
        if paused != was {
            metrics
                .log_paused
                .store(u64::from(paused), Ordering::Relaxed);
            if paused {
                tracing::error!(
                    free_bytes = self.guard.free_bytes(),
                    "capture log: the disk is nearly full; calls are forwarded but NOT recorded until space is back"
                );
            } else {
                tracing::warn!(
                    free_bytes = self.guard.free_bytes(),
                    "capture log: disk space is back; recording again"
                );
            }
        }
        paused
    }
}

impl Appender {
    fn run(&mut self, mut receiver: UnboundedReceiver<Box<FinishedCall>>) {
        if !self.fsync_every.is_zero() {
            let syncer = Arc::new(Syncer {
                file: Mutex::new(self.shared.active().file.clone()),
                dirty: AtomicBool::new(false),
                stop: AtomicBool::new(false),
            });
            let thread_syncer = syncer.clone();
            let every = self.fsync_every;
            match std::thread::Builder::new()
                .name("llmtap-log-sync".into())
                .spawn(move || {
                    while !thread_syncer.stop.load(Ordering::Acquire) {
                        std::thread::park_timeout(every);
                        thread_syncer.sync();
                    }
                }) {
                Ok(handle) => {
                    let _ = self.shared.syncer.set(syncer.clone());
                    self.syncer = Some((syncer, handle));
                }
                Err(e) => {
                    tracing::error!(error = %e, "capture log: no sync thread; syncing every group");
                    self.fsync_every = Duration::ZERO;
                }
            }
        }
        let mut group = Vec::with_capacity(MAX_GROUP);
        let mut buf = Vec::new();
        let mut written = Vec::with_capacity(MAX_GROUP);
        while let Some(first) = receiver.blocking_recv() {
            let mut bytes = first.request_body.held() + first.response_body.held();
            group.push(first);
            // A group is encoded whole before its one write: bound it by bytes too,
            // or 500 queued 1 MiB answers become one 500 MiB buffer.
            while group.len() < MAX_GROUP && bytes < MAX_GROUP_BYTES {
                match receiver.try_recv() {
                    Ok(call) => {
                        bytes += call.request_body.held() + call.response_body.held();
                        group.push(call);
                    }
                    Err(_) => break,
                }
            }
            self.append_group(&mut group, &mut buf, &mut written);
            // One huge answer grows the encoding buffer to its size (a capped 32 MiB
            // body doubles it to 64 MiB); kept, that capacity would stay resident for
            // the life of the process.
            if buf.capacity() > MAX_GROUP_BYTES {
                buf = Vec::new();
            }
        }
        if let Err(e) = self.shared.active().file.sync_data() {
            tracing::error!(error = %e, "capture log: final fsync failed");
        }
        if let Some((syncer, handle)) = self.syncer.take() {
            syncer.stop.store(true, Ordering::Release);
            handle.thread().unpark();
            let _ = handle.join();
        }
        tracing::info!(
            position = self.shared.appended_end.load(Ordering::Acquire),
            "capture log closed"
        );
    }

    // The calls arrive boxed from the channel; keeping the boxes avoids moving a large struct.
    #[allow(clippy::vec_box)]
    fn append_group(
        &mut self,
        group: &mut Vec<Box<FinishedCall>>,
        buf: &mut Vec<u8>,
        written: &mut Vec<Entry>,
    ) {
        let shared = self.shared.clone();
        let metrics = &shared.metrics;
        let taken = group.len() as u64;
        if self.disk.as_mut().is_some_and(|disk| disk.paused(metrics)) {
            // Forwarded, not recorded: the log never takes the volume's last space.
            group.clear();
            metrics.log_queue.fetch_sub(taken, Ordering::Relaxed);
            metrics.backlog.fetch_sub(taken, Ordering::Relaxed);
            metrics.log_paused_calls.fetch_add(taken, Ordering::Relaxed);
            return;
        }
        let base = shared.appended_end.load(Ordering::Acquire);
        buf.clear();
        written.clear();
        for call in group.drain(..) {
            let at = buf.len();
            let id = call.facts.id.clone();
            let (redaction, max_decoded) = (&self.redaction, self.max_decoded);
            let encoded = crate::capture::contain_panic(metrics, "capture log", &id, || {
                let call = recorder::redact_with(*call, redaction, max_decoded);
                let framed = format::encode_frame(buf, shared.run, &call, shared.keys.as_deref());
                (call, framed)
            });
            let Some((call, framed)) = encoded else {
                buf.truncate(at);
                metrics.backlog.fetch_sub(1, Ordering::Relaxed);
                continue;
            };
            match framed {
                Ok(len) => written.push(Entry {
                    start: base + at as u64,
                    end: base + (at + len) as u64,
                    run: shared.run,
                    from_disk: false,
                    call,
                }),
                Err(e) => {
                    buf.truncate(at);
                    Metrics::add(&metrics.capture_failures);
                    metrics.backlog.fetch_sub(1, Ordering::Relaxed);
                    tracing::error!(error = %e, call = %call.facts.id, "capture log: cannot encode a call; it is not recorded");
                }
            }
        }
        metrics.log_queue.fetch_sub(taken, Ordering::Relaxed);
        if buf.is_empty() {
            return;
        }
        let mut active = shared.active();
        let full = active.len + buf.len() as u64 > self.segment_bytes;
        let old = active
            .first_append
            .is_some_and(|at| at.elapsed() >= self.segment_max_age);
        if active.len > 0 && (full || old) {
            if let Err(e) = shared.start_segment(&mut active, base) {
                tracing::error!(error = %e, "capture log: cannot start a new segment; appending to the current one");
            }
        }
        if let Err(e) = (&*active.file).write_all(buf) {
            // Cut off whatever part of the group reached the file: the log stays a
            // sequence of whole records.
            let _ = active.file.set_len(active.len);
            let lost = written.len() as u64;
            metrics.capture_failures.fetch_add(lost, Ordering::Relaxed);
            metrics.backlog.fetch_sub(lost, Ordering::Relaxed);
            tracing::error!(error = %e, calls = lost, "capture log: write failed; these calls are not recorded");
            written.clear();
            return;
        }
        active.len += buf.len() as u64;
        active
            .first_append
            .get_or_insert_with(std::time::Instant::now);
        if let Some(disk) = self.disk.as_mut() {
            disk.appended += buf.len() as u64;
        }
        let end = base + buf.len() as u64;
        shared.appended_end.store(end, Ordering::Release);
        shared
            .last_append_us
            .store(crate::timefmt::now_unix_us(), Ordering::Relaxed);
        metrics.log_end.store(end, Ordering::Relaxed);
        match &self.syncer {
            Some((syncer, _)) => syncer.dirty.store(true, Ordering::Release),
            None => {
                if let Err(e) = active.file.sync_data() {
                    tracing::error!(error = %e, "capture log: fsync failed");
                }
            }
        }
        drop(active);
        self.hand_over(written);
    }

    fn hand_over(&self, written: &mut Vec<Entry>) {
        let shared = &self.shared;
        let mut spilled = false;
        for entry in written.drain(..) {
            let size = entry.end - entry.start + HANDOFF_OVERHEAD;
            let held = shared.handoff_bytes.load(Ordering::Acquire);
            if held + size > shared.handoff_limit {
                // The writer is behind: it reads this one back from the segment.
                shared.spilled_end.store(entry.end, Ordering::Release);
                spilled = true;
                continue;
            }
            shared.handoff_bytes.fetch_add(size, Ordering::AcqRel);
            if self.handoff.send(Handoff::Call(Box::new(entry))).is_err() {
                // The writer is gone (start-up failed): the record stays in the log.
                shared.handoff_bytes.fetch_sub(size, Ordering::AcqRel);
            }
        }
        if spilled && !shared.spill_signal_pending.swap(true, Ordering::AcqRel) {
            let _ = self.handoff.send(Handoff::Spilled);
        }
    }
}

/// What `Feed::fill` says about the log after filling a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedState {
    /// More may come.
    Open,
    /// The log thread has stopped and every record has been read.
    Closed,
}

/// The writer's side of the log: records in order of position, each exactly once.
pub struct Feed {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Handoff>,
    /// Position of the next record the writer has not read.
    next: u64,
    /// A record from memory that follows records still to be read from disk.
    held: Option<Entry>,
    reader: Option<segment::SegmentReader>,
    closed: bool,
    /// After a `rewind`: where the writer had read to; everything before it is on disk.
    reread_until: u64,
}

impl Feed {
    /// Where this run's records begin; earlier positions hold what earlier runs logged.
    pub fn run_start(&self) -> u64 {
        self.shared.run_start
    }

    /// The position of the next record to read.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Starts reading at `applied`, the end of what the store holds (None for a
    /// store that never applied the log: from the oldest segment).
    pub fn start_at(&mut self, applied: Option<u64>) {
        let oldest = self.oldest_position();
        let mut next = applied.unwrap_or(0).max(oldest);
        if next > self.shared.run_start {
            tracing::warn!(
                applied = next,
                log_end = self.shared.run_start,
                "the store has applied the capture log past its end (was the log directory replaced?); replaying the whole log, calls already stored are skipped"
            );
            next = oldest;
        }
        let behind = self.shared.run_start - next;
        if behind > 0 {
            tracing::info!(bytes = behind, "replaying the capture log's unapplied tail");
        }
        self.next = next;
        self.shared
            .metrics
            .log_applied
            .store(next, Ordering::Relaxed);
    }

    /// The first position the log still holds.
    fn oldest_position(&self) -> u64 {
        self.shared
            .segments()
            .first()
            .copied()
            .unwrap_or(self.shared.run_start)
    }

    /// Reads again from `applied`, the position a reopened store holds (after its
    /// writes failed): what the failed batch held and what the store lost is read
    /// back from the segments, whose calls the writer checks against the store, so
    /// each is applied exactly once. Never moves forward.
    pub fn rewind(&mut self, applied: Option<u64>) {
        let oldest = self.oldest_position();
        let to = applied.unwrap_or(0).max(oldest);
        if to < self.next {
            tracing::info!(
                bytes = self.next - to,
                "reading the capture log again from the reopened store's position"
            );
            self.reread_until = self.reread_until.max(self.next);
            self.next = to;
            self.reader = None;
        }
        self.shared.metrics.log_applied.store(to, Ordering::Relaxed);
    }

    /// Moves up to `max` records into `batch`, in log order. Waits up to `wait` for
    /// the first one when there is none.
    pub fn fill(
        &mut self,
        batch: &mut Vec<Entry>,
        max: usize,
        wait: Option<Duration>,
    ) -> FeedState {
        let mut waited = wait.is_none();
        loop {
            if batch.len() >= max {
                return FeedState::Open;
            }
            if let Some(held) = self.held.take() {
                if held.end <= self.next {
                    // Read from disk already.
                    continue;
                }
                if held.start <= self.next {
                    self.next = held.end;
                    batch.push(held);
                    continue;
                }
                let until = held.start;
                self.held = Some(held);
                self.read_disk(batch, max, until);
                continue;
            }
            match self.rx.try_recv() {
                Ok(message) => {
                    self.receive(message);
                    continue;
                }
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => self.closed = true,
            }
            if self.next < self.reread_until {
                let until = self.reread_until;
                self.read_disk(batch, max, until);
                continue;
            }
            let spilled = self.shared.spilled_end.load(Ordering::Acquire);
            if self.next < spilled {
                self.read_disk(batch, max, spilled);
                continue;
            }
            if self.closed {
                return FeedState::Closed;
            }
            if !batch.is_empty() || waited {
                return FeedState::Open;
            }
            waited = true;
            match self.rx.recv_timeout(wait.unwrap_or_default()) {
                Ok(message) => self.receive(message),
                Err(mpsc::RecvTimeoutError::Timeout) => return FeedState::Open,
                Err(mpsc::RecvTimeoutError::Disconnected) => self.closed = true,
            }
        }
    }

    fn receive(&mut self, message: Handoff) {
        match message {
            Handoff::Call(entry) => {
                let size = entry.end - entry.start + HANDOFF_OVERHEAD;
                self.shared.handoff_bytes.fetch_sub(size, Ordering::AcqRel);
                self.held = Some(*entry);
            }
            Handoff::Spilled => self
                .shared
                .spill_signal_pending
                .store(false, Ordering::Release),
        }
    }

    /// Reads records from the segment files, from `next` up to `until`.
    fn read_disk(&mut self, batch: &mut Vec<Entry>, max: usize, until: u64) {
        while self.next < until && batch.len() < max {
            let (start, next_start) = {
                let segments = self.shared.segments();
                let i = segments.partition_point(|s| *s <= self.next);
                (
                    i.checked_sub(1).map(|i| segments[i]),
                    segments.get(i).copied(),
                )
            };
            let segment_until = next_start.map_or(until, |n| n.min(until));
            let Some(start) = start else {
                tracing::error!(
                    from = self.next,
                    to = segment_until,
                    "capture log: no segment holds these positions; their calls are lost"
                );
                self.next = segment_until;
                continue;
            };
            if self.reader.as_ref().map(|r| r.start) != Some(start) {
                match segment::SegmentReader::open(&self.shared.dir, start) {
                    Ok(reader) => self.reader = Some(reader),
                    Err(e) => {
                        tracing::error!(error = %e, segment = start, "capture log: cannot open a segment; its calls are lost");
                        Metrics::add(&self.shared.metrics.store_errors);
                        self.next = segment_until;
                        continue;
                    }
                }
            }
            let Some(reader) = self.reader.as_mut() else {
                continue;
            };
            match reader.read(self.next, segment_until) {
                Ok(segment::Read::Frame(frame)) => {
                    let start = self.next;
                    let end = start + frame.len() as u64;
                    self.next = end;
                    match format::decode_frame(&frame, self.shared.keys.as_deref()) {
                        Ok((run, call)) => batch.push(Entry {
                            start,
                            end,
                            run,
                            from_disk: true,
                            call,
                        }),
                        Err(e) => {
                            Metrics::add(&self.shared.metrics.capture_failures);
                            tracing::error!(error = %e, position = start, "capture log: a record cannot be decoded; it is skipped");
                        }
                    }
                }
                Ok(segment::Read::End) => {
                    // Damage in the middle of the log: step over it to the next
                    // whole record, so only the damaged ones are lost.
                    let metrics = &self.shared.metrics;
                    let resumed = reader.resync(self.next, segment_until);
                    let to = match resumed {
                        Ok(Some(next)) => next,
                        Ok(None) => segment_until,
                        Err(e) => {
                            tracing::error!(error = %e, "capture log: cannot read on after damage");
                            Metrics::add(&metrics.store_errors);
                            segment_until
                        }
                    };
                    tracing::error!(
                        from = self.next,
                        to,
                        "capture log: damaged record(s) skipped; reading goes on at the next whole record"
                    );
                    Metrics::add(&metrics.log_damaged);
                    // At least one record was in the damage.
                    Metrics::add(&metrics.capture_failures);
                    metrics
                        .log_damaged_bytes
                        .fetch_add(to - self.next, Ordering::Relaxed);
                    self.next = to;
                }
                Err(e) => {
                    tracing::error!(error = %e, from = self.next, to = segment_until, "capture log: cannot read a segment; the rest of it is skipped");
                    Metrics::add(&self.shared.metrics.store_errors);
                    self.next = segment_until;
                }
            }
        }
    }

    /// Notes that the store holds every record before `end` (not yet flushed).
    pub fn applied(&self, end: u64) {
        self.shared
            .metrics
            .log_applied
            .store(end, Ordering::Relaxed);
    }

    /// Starts a new segment when the active one holds only records the store has
    /// applied (up to `applied`) and nothing was appended for `idle`: the caller
    /// then flushes the store and retires it, so applied calls (prompts included)
    /// leave the disk within seconds of being stored rather than when a 64 MiB
    /// segment fills. Returns whether it did.
    pub fn seal(&self, applied: u64, idle: Duration) -> bool {
        let shared = &self.shared;
        let last = shared.last_append_us.load(Ordering::Relaxed);
        if last == 0 || crate::timefmt::now_unix_us().saturating_sub(last) < idle.as_micros() as u64
        {
            return false;
        }
        // The log thread writes only while holding the active segment, so what was
        // appended cannot move while we hold it.
        let mut active = shared.active();
        let end = shared.appended_end.load(Ordering::Acquire);
        if active.len == 0 || end != applied || self.next != end {
            return false;
        }
        match shared.start_segment(&mut active, end) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "capture log: cannot seal the applied segment");
                false
            }
        }
    }

    /// Whether a segment lies wholly before `durable` and may go once the store is flushed.
    pub fn retirable(&self, durable: u64) -> bool {
        let segments = self.shared.segments();
        segments.len() >= 2 && segments[1] <= durable
    }

    /// Deletes the segments wholly before `durable`, a position the store has
    /// flushed. The segment being appended always stays.
    pub fn retire(&mut self, durable: u64) {
        let mut segments = self.shared.segments();
        while segments.len() >= 2 && segments[1] <= durable {
            let start = segments[0];
            let path = segment::path_of(&self.shared.dir, start);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(error = %e, segment = %path.display(), "capture log: cannot remove an applied segment");
                break;
            }
            if self.reader.as_ref().map(|r| r.start) == Some(start) {
                self.reader = None;
            }
            segments.remove(0);
            tracing::debug!(start, "capture log: applied segment removed");
        }
    }
}

#[cfg(test)]
mod tests;

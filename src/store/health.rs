//! What the store tells operators: its counters, its write health and the disk
//! guard's level, for `/healthz` and `/metrics`. Kept by the handle, so they
//! survive an engine being reopened.

use super::disk::DiskLevel;
use super::Store;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Storage counters, shown on `/metrics` and `/healthz`.
#[derive(Default)]
pub struct StoreStats {
    /// The last failed batch write (message, unix µs), cleared by the next one that succeeds.
    pub last_write_error: std::sync::Mutex<Option<(String, u64)>>,
    pub attachments_mirrored: AtomicU64,
    pub attachment_failures: AtomicU64,
    pub content_errors: AtomicU64,
    pub bodies_skipped_disk: AtomicU64,
    pub calls_skipped_disk: AtomicU64,
    pub retention_calls_deleted: AtomicU64,
    pub retention_bodies_dropped: AtomicU64,
    pub retention_invocations_deleted: AtomicU64,
    pub chunks_freed: AtomicU64,
    pub blobs_freed: AtomicU64,
    /// Engines reopened after failed writes, and reopen attempts that failed.
    pub reopens: AtomicU64,
    pub reopen_failures: AtomicU64,
    /// 1 while the handle reopens its engine.
    pub reopening: AtomicU64,
    /// Snapshots taken by reopening the engine (`Store::maintain`), and the time the
    /// writer spent on them, in microseconds.
    pub snapshots: AtomicU64,
    pub snapshot_us: AtomicU64,
}

impl StoreStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The store's state as `/healthz` reports it (`api::answers::StorageHealth`).
#[derive(Debug, Clone)]
pub struct StorageState {
    /// False while the store is reopened after failed writes.
    pub open: bool,
    pub disk: DiskLevel,
    /// Free space on the data directory's volume, when known.
    pub free_bytes: Option<u64>,
    pub storing_bodies: bool,
    /// False while capture is paused for disk space, batch writes fail or the store
    /// reopens (calls wait in the capture log meanwhile).
    pub storing_calls: bool,
    pub encrypted: bool,
    /// The last batch write's error and when it happened (unix µs), while writes fail.
    pub last_write_error: Option<(String, u64)>,
    /// Times the store was reopened after failed writes since llmtap started.
    pub reopens: u64,
}

impl Store {
    /// Remembers a failed batch write for `/healthz` (`None`: the last write succeeded).
    pub fn note_write_outcome(&self, error: Option<String>) {
        let mut last = match self.context.stats.last_write_error.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        *last = error.map(|e| (e, crate::timefmt::now_unix_us()));
    }

    /// The last batch write's error while writes fail: (message, unix µs).
    pub fn last_write_error(&self) -> Option<(String, u64)> {
        match self.context.stats.last_write_error.lock() {
            Ok(l) => l.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Storage state for `/healthz`.
    pub fn health(&self) -> StorageState {
        let disk = self.context.disk.level();
        let free = self.context.disk.free_bytes();
        let last_write_error = self.last_write_error();
        let open = self.is_open();
        let failing = last_write_error.is_some();
        StorageState {
            open,
            disk,
            free_bytes: (free != u64::MAX).then_some(free),
            // PostgreSQL keeps bodies while the local disk is nearly full (they go to
            // the server); a paused capture stores nothing on any engine.
            storing_bodies: match disk {
                DiskLevel::Ok => true,
                DiskLevel::BodiesPaused => !self.content_on_local_disk(),
                DiskLevel::CapturePaused => false,
            } && open
                && !failing,
            storing_calls: disk != DiskLevel::CapturePaused && !failing && open,
            encrypted: self.encrypted(),
            last_write_error,
            reopens: self.context.stats.reopens.load(Ordering::Relaxed),
        }
    }

    /// Storage metrics in Prometheus text, appended to `/metrics`.
    pub fn render_metrics(&self) -> String {
        let s = &self.context.stats;
        let mut out = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, help, value) in [
            (
                "llmtap_attachments_mirrored_total",
                "Base64 attachments decoded into the blob store (occurrences).",
                get(&s.attachments_mirrored),
            ),
            (
                "llmtap_attachment_failures_total",
                "Attachments that could not be mirrored (kept inline).",
                get(&s.attachment_failures),
            ),
            (
                "llmtap_content_errors_total",
                "Calls whose content could not be stored (metadata kept).",
                get(&s.content_errors),
            ),
            (
                "llmtap_bodies_skipped_disk_total",
                "Calls stored without bodies because the disk was nearly full.",
                get(&s.bodies_skipped_disk),
            ),
            (
                "llmtap_calls_skipped_disk_total",
                "Calls not stored at all because the disk was full.",
                get(&s.calls_skipped_disk),
            ),
            (
                "llmtap_retention_calls_deleted_total",
                "Calls deleted by retention.",
                get(&s.retention_calls_deleted),
            ),
            (
                "llmtap_retention_bodies_dropped_total",
                "Calls whose bodies were dropped by body retention.",
                get(&s.retention_bodies_dropped),
            ),
            (
                "llmtap_retention_invocations_deleted_total",
                "Invocations deleted by retention.",
                get(&s.retention_invocations_deleted),
            ),
            (
                "llmtap_content_chunks_freed_total",
                "Content chunks freed when nothing referenced them.",
                get(&s.chunks_freed),
            ),
            (
                "llmtap_blobs_freed_total",
                "Attachment blobs freed when nothing referenced them.",
                get(&s.blobs_freed),
            ),
            (
                "llmtap_store_reopens_total",
                "Times the store was reopened after its writes failed (capture resumed).",
                get(&s.reopens),
            ),
            (
                "llmtap_store_reopen_failures_total",
                "Attempts to reopen the store that failed (retried).",
                get(&s.reopen_failures),
            ),
            (
                "llmtap_store_snapshots_total",
                "Times the store was reopened to write its snapshot (store.snapshot_every).",
                get(&s.snapshots),
            ),
            (
                "llmtap_store_snapshot_microseconds_total",
                "Time the writer spent reopening the store for snapshots.",
                get(&s.snapshot_us),
            ),
        ] {
            crate::metrics::write_counter(&mut out, name, help, value);
        }
        let failing = u8::from(self.last_write_error().is_some() || !self.is_open());
        let _ = writeln!(out, "# HELP llmtap_store_writes_failing 1 while the store's writes fail or it is being reopened.\n# TYPE llmtap_store_writes_failing gauge\nllmtap_store_writes_failing {failing}");
        let level = self.context.disk.level();
        let _ = writeln!(out, "# HELP llmtap_disk_level 0 ok, 1 bodies paused (disk nearly full), 2 capture paused (disk full).\n# TYPE llmtap_disk_level gauge\nllmtap_disk_level {}", level as u8);
        let free = self.context.disk.free_bytes();
        if free != u64::MAX {
            let _ = writeln!(out, "# HELP llmtap_disk_free_bytes Free bytes on the data directory's file system.\n# TYPE llmtap_disk_free_bytes gauge\nllmtap_disk_free_bytes {free}");
        }
        out
    }

    /// True when the disk is too full to store anything; the writer then drops calls (counted).
    pub fn capture_paused(&self) -> bool {
        self.context.disk.level() == DiskLevel::CapturePaused
    }

    /// Counts calls the writer dropped because capture is paused.
    pub fn count_skipped(&self, n: u64) {
        StoreStats::add(&self.context.stats.calls_skipped_disk, n);
    }
}

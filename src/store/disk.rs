//! Disk safety: watches free space on the data directory's file system and says
//! how much llmtap may store.
//!
//! Below `min_free_mb` the store keeps metadata but stops storing bodies; below
//! `critical_free_mb` the writer stops storing calls at all. Forwarding never
//! stops. Each level is left only when free space is back above its threshold plus
//! a margin, so a disk hovering at the line does not flap. A full disk is what makes
//! an embedded store fail mid-write; stopping early is how llmtap never crashes or
//! corrupts its store on one. The probe is injectable so tests can fake a full disk.
//! `write_durably` is the one way a store file outside the engine is written whole.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

/// Returns the bytes available to this process on the file system holding the path.
pub type FreeSpaceProbe = Arc<dyn Fn(&Path) -> std::io::Result<u64> + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskLevel {
    Ok = 0,
    /// Bodies, prompts and attachments are not stored; metadata and cost are.
    BodiesPaused = 1,
    /// Nothing is stored; calls are still forwarded (and counted).
    CapturePaused = 2,
}

impl DiskLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskLevel::Ok => "ok",
            DiskLevel::BodiesPaused => "bodies_paused",
            DiskLevel::CapturePaused => "capture_paused",
        }
    }

    fn from_u8(v: u8) -> DiskLevel {
        match v {
            1 => DiskLevel::BodiesPaused,
            2 => DiskLevel::CapturePaused,
            _ => DiskLevel::Ok,
        }
    }
}

/// `statvfs(2)` on the path: blocks available to unprivileged users × fragment size.
pub fn statvfs_free(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated path and `stat` a properly sized,
    // writable statvfs that the call fills; nothing is retained after it returns.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

pub struct DiskGuard {
    dir: PathBuf,
    probe: RwLock<FreeSpaceProbe>,
    level: AtomicU8,
    free_bytes: AtomicU64,
    min_free: u64,
    critical_free: u64,
}

impl std::fmt::Debug for DiskGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskGuard")
            .field("dir", &self.dir)
            .field("level", &self.level())
            .field("free_bytes", &self.free_bytes())
            .finish_non_exhaustive()
    }
}

impl DiskGuard {
    pub fn new(dir: &Path, min_free_mb: u64, critical_free_mb: u64) -> DiskGuard {
        DiskGuard {
            dir: dir.to_path_buf(),
            probe: RwLock::new(Arc::new(statvfs_free)),
            level: AtomicU8::new(DiskLevel::Ok as u8),
            free_bytes: AtomicU64::new(u64::MAX),
            min_free: min_free_mb << 20,
            critical_free: critical_free_mb << 20,
        }
    }

    pub fn level(&self) -> DiskLevel {
        DiskLevel::from_u8(self.level.load(Ordering::Relaxed))
    }

    /// Free bytes at the last check (`u64::MAX` before the first).
    pub fn free_bytes(&self) -> u64 {
        self.free_bytes.load(Ordering::Relaxed)
    }

    /// Replaces the free-space probe (tests simulate a full disk with this).
    pub fn set_probe(&self, probe: FreeSpaceProbe) {
        match self.probe.write() {
            Ok(mut p) => *p = probe,
            Err(p) => *p.into_inner() = probe,
        }
    }

    /// Measures free space and updates the level; logs every change loudly.
    pub fn check(&self) -> DiskLevel {
        let probe = match self.probe.read() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let before = self.level();
        let free = match probe(&self.dir) {
            Ok(free) => free,
            Err(e) => {
                // Unknown free space: keep the last decision rather than guess.
                tracing::warn!(error = %e, dir = %self.dir.display(), "cannot read free disk space");
                return before;
            }
        };
        self.free_bytes.store(free, Ordering::Relaxed);
        // Leaving a level needs a margin above its threshold (hysteresis).
        let margin = |t: u64| t + (t / 10).min(64 << 20);
        let level = if free < self.critical_free
            || (before == DiskLevel::CapturePaused && free < margin(self.critical_free))
        {
            DiskLevel::CapturePaused
        } else if free < self.min_free || (before != DiskLevel::Ok && free < margin(self.min_free))
        {
            DiskLevel::BodiesPaused
        } else {
            DiskLevel::Ok
        };
        if level != before {
            self.level.store(level as u8, Ordering::Relaxed);
            let free_mb = free >> 20;
            match level {
                DiskLevel::Ok => tracing::warn!(
                    free_mb,
                    "disk space is back: storing calls and bodies again"
                ),
                DiskLevel::BodiesPaused => {
                    tracing::error!(free_mb, min_free_mb = self.min_free >> 20, dir = %self.dir.display(), "DISK NEARLY FULL: storing metadata only, bodies are NOT recorded (forwarding continues)")
                }
                DiskLevel::CapturePaused => {
                    tracing::error!(free_mb, critical_free_mb = self.critical_free >> 20, dir = %self.dir.display(), "DISK FULL: calls are NOT recorded at all (forwarding continues)")
                }
            }
        }
        level
    }
}

/// Writes `bytes` as the file at `path`, durably and whole: to a temporary name,
/// synced, renamed into place and its directory synced, so a name that exists
/// always has its whole value (attachment files, period keys). The temporary file
/// is removed when any step fails.
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_free_space_with_hysteresis() {
        let guard = DiskGuard::new(Path::new("/"), 100, 10);
        let free = Arc::new(AtomicU64::new(500 << 20));
        let f = free.clone();
        guard.set_probe(Arc::new(move |_| Ok(f.load(Ordering::Relaxed))));
        assert_eq!(guard.check(), DiskLevel::Ok);
        free.store(50 << 20, Ordering::Relaxed);
        assert_eq!(guard.check(), DiskLevel::BodiesPaused);
        free.store(5 << 20, Ordering::Relaxed);
        assert_eq!(guard.check(), DiskLevel::CapturePaused);
        free.store(10 << 20, Ordering::Relaxed);
        assert_eq!(guard.check(), DiskLevel::CapturePaused, "inside the margin");
        free.store(20 << 20, Ordering::Relaxed);
        assert_eq!(guard.check(), DiskLevel::BodiesPaused);
        free.store(105 << 20, Ordering::Relaxed);
        assert_eq!(guard.check(), DiskLevel::BodiesPaused, "inside the margin");
        free.store(200 << 20, Ordering::Relaxed);
        assert_eq!(guard.check(), DiskLevel::Ok);
    }

    #[test]
    fn statvfs_reads_the_real_disk() {
        assert!(statvfs_free(&std::env::temp_dir()).unwrap() > 0);
    }
}

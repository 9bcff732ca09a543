//! The storage background thread: disk checks every few seconds and retention
//! sweeps (`Engine::sweep`) on the open engine; stopped on shutdown.

use super::Store;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often free disk space is measured.
const DISK_CHECK_EVERY: Duration = Duration::from_secs(5);
/// How often retention sweeps run.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

pub struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    pub fn spawn(store: Store) -> std::io::Result<Background> {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("llmtap-storage".into())
            .spawn(move || {
                store.disk().check();
                // First sweep soon after start, then every SWEEP_EVERY.
                let mut next_sweep = Instant::now() + Duration::from_secs(30);
                while !stop2.load(Ordering::Relaxed) {
                    std::thread::park_timeout(DISK_CHECK_EVERY);
                    if stop2.load(Ordering::Relaxed) {
                        break;
                    }
                    store.disk().check();
                    let options = store.options();
                    let retention = options.retention_days > 0 || options.body_retention_days > 0;
                    if retention && store.is_open() && Instant::now() >= next_sweep {
                        if let Err(e) = store.sweep(crate::timefmt::now_unix_us()) {
                            tracing::error!(error = %e, "retention sweep failed; will retry");
                        }
                        next_sweep = Instant::now() + SWEEP_EVERY;
                    }
                }
            })?;
        Ok(Background {
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

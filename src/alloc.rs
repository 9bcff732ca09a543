//! The process's allocator: small blocks from mimalloc, large ones from the system's.
//!
//! Why split: the writer's time was a third glibc malloc and free (sled clones and
//! drops a tree node on most inserts, ZSTD and JSON allocate per record); mimalloc's
//! thread-local free lists make those blocks cheap, and writer throughput rose by
//! 45–60 % (BENCHMARKS.md, "Writer profile and allocator"). But mimalloc keeps freed memory in
//! its heaps (purged per thread, only as that thread allocates again), so a 100 MB
//! response or a burst of streams left the process tens of MB larger (the chaos
//! test's "memory comes back" check failed). Large blocks (capture buffers, bodies)
//! therefore stay with glibc, tuned below to hand them back to the system when freed.
//!
//! Soundness: `GlobalAlloc` passes the allocation's layout back on `dealloc` and
//! `realloc`, so the size alone says which allocator owns a block; a `realloc` that
//! crosses the line moves the block.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks up to this size come from mimalloc.
const SMALL_MAX: usize = 4096;

pub struct SplitAllocator;

fn is_small(layout: &Layout) -> bool {
    layout.size() <= SMALL_MAX
}

// SAFETY: each method forwards to the allocator that owns blocks of the layout's size
// (the same size on allocation and release, as GlobalAlloc guarantees), and a
// reallocation across the line copies min(old, new) bytes into a block of the other.
unsafe impl GlobalAlloc for SplitAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_small(&layout) {
            mimalloc::MiMalloc.alloc(layout)
        } else {
            System.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_small(&layout) {
            mimalloc::MiMalloc.alloc_zeroed(layout)
        } else {
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_small(&layout) {
            mimalloc::MiMalloc.dealloc(ptr, layout)
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let was_small = is_small(&layout);
        let now_small = new_size <= SMALL_MAX;
        match (was_small, now_small) {
            (true, true) => mimalloc::MiMalloc.realloc(ptr, layout, new_size),
            (false, false) => System.realloc(ptr, layout, new_size),
            _ => {
                let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
                    return std::ptr::null_mut();
                };
                let new = self.alloc(new_layout);
                if !new.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new
            }
        }
    }
}

/// How often a thread that goes idle hands its free small blocks back at most.
const IDLE_RELEASE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How much the process's peak resident size must have grown since a thread last
/// handed its blocks back before it does again.
const RELEASE_AFTER_PEAK_GROWTH: u64 = 8 << 20;

/// Called when a runtime worker parks (has nothing to do) and when the writer finds
/// nothing to do: after a burst, at most once a second per thread, mimalloc frees this
/// thread's empty pages and returns what it can to the system. Why: mimalloc collects
/// a thread's heap only as that thread allocates, so a worker that relayed a thousand
/// streams and went quiet kept their blocks (about 13 MB more than glibc after the
/// chaos test's burst).
///
/// Only after a burst (the process's peak resident size grew by
/// `RELEASE_AFTER_PEAK_GROWTH` since this thread's last release): a release hands the
/// pages back with `madvise`, and the next call the thread relays faults them in
/// again. At 10 requests a second every worker parked after each call, so one call in
/// five paid a dozen page faults, about 0.1 ms on this VM, on its answer's path
/// (BENCHMARKS.md, "What a lone call waits for").
pub fn release_idle_memory() {
    use std::cell::Cell;
    use std::time::Instant;
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
        static PEAK_AT_RELEASE: Cell<u64> = const { Cell::new(0) };
    }
    let now = Instant::now();
    let due = LAST.with(|last| match last.get() {
        Some(at) if now.duration_since(at) < IDLE_RELEASE_EVERY => false,
        _ => {
            last.set(Some(now));
            true
        }
    });
    if !due {
        return;
    }
    let peak = peak_resident_bytes();
    let after_burst = PEAK_AT_RELEASE.with(|at_release| {
        let grown = peak >= at_release.get().saturating_add(RELEASE_AFTER_PEAK_GROWTH);
        if grown {
            at_release.set(peak);
        }
        grown
    });
    if after_burst {
        // SAFETY: mi_collect only frees and purges memory of the calling thread's
        // heap that no live allocation uses.
        unsafe { libmimalloc_sys::mi_collect(true) };
    }
}

/// The process's peak resident size so far (`getrusage`'s `ru_maxrss`); 0 when it
/// cannot be read.
fn peak_resident_bytes() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    u64::try_from(usage.ru_maxrss)
        .unwrap_or(0)
        .saturating_mul(1024)
}

/// glibc keeps freed memory of large blocks in its heaps once its adaptive mmap
/// threshold has grown, so one 100 MB response would leave the process 100 MB larger
/// for good. A fixed threshold sends every block over 1 MiB (capture buffers, big
/// bodies) to mmap, which returns it to the system when freed; fewer arenas keep the
/// heaps of the runtime's threads from multiplying.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_MMAP_THRESHOLD: i32 = -3;
    const M_ARENA_MAX: i32 = -8;
    // SAFETY: mallopt only adjusts allocator parameters; called once before any thread starts.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 1 << 20);
        mallopt(M_ARENA_MAX, 4);
    }
    // Freed blocks stay mapped inside glibc's heaps after a burst (thousands of
    // streams); a periodic trim hands whole free pages back. It runs every few
    // seconds and takes well under a millisecond on an idle heap.
    let _ = std::thread::Builder::new()
        .name("llmtap-trim".into())
        .spawn(|| loop {
            extern "C" {
                fn malloc_trim(pad: usize) -> i32;
            }
            std::thread::sleep(std::time::Duration::from_secs(5));
            // SAFETY: malloc_trim is thread-safe and only releases free memory.
            unsafe {
                malloc_trim(0);
            }
        });
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}

//! A small persistent thread pool for data-parallel kernels.
//!
//! `run(f)` calls `f(i)` once for every worker index `i` in `0..threads`
//! (index 0 on the calling thread) and returns when all calls have finished;
//! work split statically by index. `run_chunked(f)` is for jobs whose
//! workers take their work from a shared [`Chunks`], first come first
//! served: a worker that has not started `f` by the time the caller has
//! finished its own call is left out, so a worker the operating system has
//! descheduled does not hold up the round. Either way every output element
//! is computed by exactly one call with a fixed operation order, so results
//! depend neither on timing nor on the thread count.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    generation: AtomicU64,
    /// The current round's generation (above [`GATE_SHIFT`]), whether it is
    /// closed to late workers ([`GATE_CLOSED`], `run_chunked` only) and how
    /// many workers joined it. A worker runs a round's job only after
    /// joining it here, so it never runs a round twice or one it was too
    /// late for.
    gate: AtomicU64,
    done: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
    job: UnsafeCell<Option<Job>>,
}

// SAFETY: `job` is written only by the thread holding `Pool::run_lock` before it
// publishes a new generation (Release) and read by workers after they observe
// that generation (Acquire); it is cleared only after all workers report done.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointer is only dereferenced while `run` is active.
unsafe impl Send for Shared {}

/// Persistent worker threads (threads - 1 of them; the caller is worker 0).
pub(crate) struct Pool {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
    threads: usize,
    run_lock: Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads)
            .finish()
    }
}

const SPIN: u32 = 20_000;

const GATE_SHIFT: u32 = 16;
const GATE_CLOSED: u64 = 1 << 15;
const GATE_JOINED: u64 = GATE_CLOSED - 1;

/// Join the round of generation `g` unless it is closed (or already over:
/// the gate then holds a later generation).
fn join(gate: &AtomicU64, g: u64) -> bool {
    let mut cur = gate.load(Ordering::Acquire);
    loop {
        if cur >> GATE_SHIFT != g & (u64::MAX >> GATE_SHIFT) || cur & GATE_CLOSED != 0 {
            return false;
        }
        match gate.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

fn worker(shared: Arc<Shared>, index: usize) {
    let mut seen = 0u64;
    loop {
        // Wait for a new generation: spin, then yield, then sleep.
        let mut spins = 0u32;
        loop {
            let g = shared.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            if shared.shutdown.load(Ordering::Acquire) {
                return;
            }
            spins += 1;
            if spins < SPIN {
                std::hint::spin_loop();
                if spins.is_multiple_of(64) {
                    std::thread::yield_now();
                }
            } else {
                let guard = shared.lock.lock().unwrap_or_else(|e| e.into_inner());
                shared.sleepers.fetch_add(1, Ordering::SeqCst);
                let mut guard = guard;
                while shared.generation.load(Ordering::SeqCst) == seen
                    && !shared.shutdown.load(Ordering::SeqCst)
                {
                    guard = shared.cv.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
                shared.sleepers.fetch_sub(1, Ordering::SeqCst);
                drop(guard);
                spins = 0;
            }
        }
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        if !join(&shared.gate, seen) {
            // Too late: the caller did the work and does not wait for us.
            continue;
        }
        // SAFETY: the round's gate was set after `job` (Release / Acquire,
        // through the join), and the caller keeps the closure alive until
        // every worker that joined reports done, which happens only after
        // this call returns.
        let job = unsafe { *shared.job.get() };
        if let Some(job) = job {
            // SAFETY: see above; the pointee outlives this call.
            let f = unsafe { &*job };
            if catch_unwind(AssertUnwindSafe(|| f(index))).is_err() {
                shared.panicked.store(true, Ordering::SeqCst);
            }
        }
        shared.done.fetch_add(1, Ordering::AcqRel);
    }
}

impl Pool {
    /// Create a pool with `threads` workers in total (at least 1).
    pub(crate) fn new(threads: usize) -> Self {
        let threads = threads.clamp(1, GATE_JOINED as usize);
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            gate: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            cv: Condvar::new(),
            job: UnsafeCell::new(None),
        });
        let mut handles = Vec::new();
        for i in 1..threads {
            let s = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("verinfer-worker-{i}"))
                .spawn(move || worker(s, i));
            match spawned {
                Ok(h) => handles.push(h),
                Err(_) => break,
            }
        }
        let threads = handles.len() + 1;
        Pool {
            shared,
            handles,
            threads,
            run_lock: Mutex::new(()),
        }
    }

    /// Number of workers (including the caller).
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// Run `f(i)` for every `i in 0..threads()`, in parallel; returns when all finish.
    pub(crate) fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        self.round(f, false);
    }

    /// Run `f(0)` on the caller and `f(i)` on each worker that starts before
    /// the caller's call returns; returns when all calls started finish. For
    /// jobs that take all their work from a shared [`Chunks`] (the caller's
    /// call then does whatever the others have not taken).
    pub(crate) fn run_chunked(&self, f: &(dyn Fn(usize) + Sync)) {
        self.round(f, true);
    }

    fn round(&self, f: &(dyn Fn(usize) + Sync), chunked: bool) {
        if self.threads == 1 {
            f(0);
            return;
        }
        let _guard = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let sh = &*self.shared;
        // SAFETY: erase the lifetime; the pointer is cleared before returning and
        // no worker dereferences it after incrementing `done`.
        let job: Job = unsafe {
            std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static (dyn Fn(usize) + Sync)>(f)
        };
        // SAFETY: no worker reads `job` now: every worker that joined the
        // previous round has finished it, and none can join this one before
        // its gate is published below.
        unsafe { *sh.job.get() = Some(job) };
        sh.done.store(0, Ordering::SeqCst);
        // Only this thread advances the generation (under `run_lock`).
        let g = sh.generation.load(Ordering::SeqCst) + 1;
        sh.gate.store(
            (g & (u64::MAX >> GATE_SHIFT)) << GATE_SHIFT,
            Ordering::SeqCst,
        );
        sh.generation.store(g, Ordering::SeqCst);
        if sh.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
            sh.cv.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
        let others = if chunked {
            // Close the round: the workers that joined are the ones to wait for.
            (sh.gate.fetch_or(GATE_CLOSED, Ordering::AcqRel) & GATE_JOINED) as usize
        } else {
            self.handles.len()
        };
        let mut spins = 0u32;
        while sh.done.load(Ordering::Acquire) < others {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        // SAFETY: every worker that joined this round is done, and no other
        // can join it (it is closed, or every worker joined).
        unsafe { *sh.job.get() = None };
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if sh.panicked.swap(false, Ordering::SeqCst) {
            panic!("a worker thread panicked");
        }
    }
}

impl Pool {
    /// Run `f` once on each of `parts`, part `t` on worker `t` (so no more
    /// parts than workers); returns when all finish. With one part, `f`
    /// runs on the caller without waking the workers.
    pub(crate) fn run_parts<A: Send>(&self, parts: Vec<A>, f: &(dyn Fn(A) + Sync)) {
        assert!(parts.len() <= self.threads, "more parts than workers");
        if parts.len() <= 1 {
            parts.into_iter().for_each(f);
            return;
        }
        // Each worker takes its own part out of its own (uncontended) cell.
        let cells: Vec<Mutex<Option<A>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
        self.run(&|t| {
            let part = cells
                .get(t)
                .and_then(|c| c.lock().unwrap_or_else(|e| e.into_inner()).take());
            if let Some(a) = part {
                f(a);
            }
        });
    }
}

/// The chunks of `0..n`, handed out in order to whichever worker asks
/// first, each about `1 / parts` of what is left (so they shrink towards
/// the end) and a multiple of `min` long (but for the last): a worker that
/// starts late or is slowed takes fewer, and the others wait at the end of
/// a round at most for one small chunk. Which worker computes a chunk
/// changes no result (every output is computed by one call with a fixed
/// operation order).
pub(crate) struct Chunks {
    next: AtomicUsize,
    n: usize,
    min: usize,
    parts: usize,
}

impl Chunks {
    /// `0..n` in chunks of at least `min`, each about `1 / parts` of what
    /// is left (both at least 1).
    pub(crate) fn new(n: usize, min: usize, parts: usize) -> Self {
        Chunks {
            next: AtomicUsize::new(0),
            n,
            min: min.max(1),
            parts: parts.max(1),
        }
    }

    /// The next chunk not yet taken, if any.
    #[inline]
    pub(crate) fn take(&self) -> Option<std::ops::Range<usize>> {
        let mut start = self.next.load(Ordering::Relaxed);
        loop {
            let left = self.n.checked_sub(start).filter(|&l| l > 0)?;
            let len = left
                .div_ceil(self.parts)
                .next_multiple_of(self.min)
                .min(left);
            match self.next.compare_exchange_weak(
                start,
                start + len,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(start..start + len),
                Err(now) => start = now,
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _l = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.cv.notify_all();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// A slice that pool workers write to concurrently (each index by one worker).
///
/// Backed by the caller's `&mut [f32]` viewed as relaxed atomics, so it is
/// sound even if two workers were to write the same index; results become
/// visible to the caller when `Pool::run` returns (its completion counter
/// synchronises with every worker).
pub(crate) struct SharedOut<'a> {
    cells: &'a [AtomicU32],
}

impl<'a> SharedOut<'a> {
    /// Wrap a mutable slice.
    pub(crate) fn new(s: &'a mut [f32]) -> Self {
        // SAFETY: `AtomicU32` has the same size and alignment as `f32`
        // (both 4 bytes, align 4 on every supported target), and we hold the
        // exclusive borrow of `s` for `'a`, so no non-atomic access can overlap.
        let cells =
            unsafe { std::slice::from_raw_parts(s.as_mut_ptr() as *const AtomicU32, s.len()) };
        SharedOut { cells }
    }

    /// Write `v` at index `i` (panics if out of bounds).
    #[inline]
    pub(crate) fn set(&self, i: usize, v: f32) {
        self.cells[i].store(v.to_bits(), Ordering::Relaxed);
    }

    /// Pointer to indices `i..i + len`, for plain (vectorisable) stores
    /// (panics if out of bounds).
    ///
    /// # Safety
    /// No other worker reads or writes these indices during the same
    /// `Pool::run` (the static work split guarantees it at every call site),
    /// and the caller writes only within them.
    #[inline(always)]
    pub(crate) unsafe fn ptr(&self, i: usize, len: usize) -> *mut f32 {
        // `AtomicU32` is an `UnsafeCell`, so its memory may be written through
        // a pointer derived from a shared reference.
        self.cells[i..i + len].as_ptr() as *mut f32
    }
}
const _: () = assert!(
    std::mem::size_of::<AtomicU32>() == 4
        && std::mem::align_of::<AtomicU32>() == std::mem::align_of::<f32>()
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Workers taking chunks cover every index exactly once, in whole
    /// multiples of the least size (but for the last), whatever the thread
    /// count.
    #[test]
    fn chunks_cover_every_index_once() {
        for threads in [1, 2, 3, 4] {
            let pool = Pool::new(threads);
            for (n, min, parts) in [(0, 4, 8), (1, 4, 8), (37, 5, 3), (64, 8, 1), (100, 1, 8)] {
                let chunks = Chunks::new(n, min, parts);
                let seen: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(&|_| {
                    while let Some(r) = chunks.take() {
                        let whole = r.start % min == 0 && (r.len() % min == 0 || r.end == n);
                        assert!(whole && !r.is_empty(), "{r:?} of {n}");
                        for i in r {
                            seen[i].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
                assert!(chunks.take().is_none());
                assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
            }
        }
    }

    /// Rounds that wait for every worker and rounds that leave late workers
    /// out, interleaved: every index of `run` is called once per round, and
    /// every chunk of `run_chunked` computed once, by the caller and
    /// whichever workers joined in time (a worker late for one round never
    /// runs it, nor any round twice).
    #[test]
    fn late_workers_skip_chunked_rounds_and_join_the_next() {
        let pool = Pool::new(3);
        // Chunked rounds of little work, so that workers are often late for
        // them, each followed by a round that waits for every worker.
        for round in 0..4000 {
            if round % 2 == 0 {
                let calls: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
                pool.run(&|i| {
                    calls[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(calls.iter().all(|c| c.load(Ordering::Relaxed) == 1));
            } else {
                let chunks = Chunks::new(8, 1 + round % 5, 12);
                let seen: Vec<AtomicUsize> = (0..8).map(|_| AtomicUsize::new(0)).collect();
                let callers = AtomicUsize::new(0);
                pool.run_chunked(&|_| {
                    callers.fetch_add(1, Ordering::Relaxed);
                    while let Some(r) = chunks.take() {
                        for i in r {
                            seen[i].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
                assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
                assert!((1..=3).contains(&callers.load(Ordering::Relaxed)));
            }
        }
    }
}

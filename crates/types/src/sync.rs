//! One rule for shared state behind a `Mutex`: a panic while a lock was held
//! leaves plain data (counters, maps, queues) that stays valid, so the
//! process keeps serving instead of failing every later call.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the data over from a thread that panicked holding it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

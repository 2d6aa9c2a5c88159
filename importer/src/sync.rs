//! A lock whose holder panicked is still used: what it guards (progress counters, results
//! collected so far, a cache index) stays meaningful after a panic elsewhere, and a second
//! panic would lose the run's report.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Lock `m`, whether or not a thread panicked while holding it.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What `m` holds, whether or not a thread panicked while holding it.
pub fn into_inner<T>(m: Mutex<T>) -> T {
    m.into_inner().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_poisoned_by_a_panic_is_still_taken_with_what_it_held() {
        let m = std::sync::Arc::new(Mutex::new(vec![1]));
        let held = std::sync::Arc::clone(&m);
        let _ = std::thread::spawn(move || {
            let mut v = held.lock().unwrap();
            v.push(2);
            panic!("a holder panics");
        })
        .join();
        assert!(m.is_poisoned());
        assert_eq!(*lock(&m), vec![1, 2]);
        let m = std::sync::Arc::try_unwrap(m).unwrap();
        assert_eq!(into_inner(m), vec![1, 2]);
    }
}

//! Two archives in flight, in the bundle's order. With a runtime that imports in two steps
//! (containerd's native client: store the content, then unpack and name), one archive's
//! second step runs while the next archive's first step does: on two cores, containerd
//! unpacking one image while the importer decompresses and hashes the next.
//!
//! Each step is taken by one archive at a time and in plan order, so what a one-at-a-time
//! run promises still holds: an archive finds every blob and snapshot of the archives before
//! it, and of two archives that set one name, the one sorting last sets it last. An archive
//! may read before its turn to store (the backend waits for it before its first write), so
//! two archives with nothing to send are decompressed at once.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::stop::stop_signal;

/// One step, taken by the archives in plan order.
struct Turns {
    state: Mutex<State>,
    moved: Condvar,
}

#[derive(Default)]
struct State {
    /// Every archive before this one has passed.
    next: usize,
    /// Archives after `next` that have passed already (they left without taking the step).
    passed: BTreeSet<usize>,
}

impl Turns {
    fn new() -> Turns {
        Turns {
            state: Mutex::new(State::default()),
            moved: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    /// Wait for archive `i`'s turn. A run being stopped waits for nobody: every archive
    /// then fails at once as stopped.
    fn wait(&self, i: usize) {
        let mut state = self.lock();
        while state.next < i && stop_signal().is_none() {
            state = self
                .moved
                .wait_timeout(state, Duration::from_millis(200))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Whether every archive before `i` has passed.
    fn reached(&self, i: usize) -> bool {
        self.lock().next >= i
    }

    /// Archive `i` is done with this step, or leaves without taking it.
    fn pass(&self, i: usize) {
        let mut state = self.lock();
        state.passed.insert(i);
        loop {
            let next = state.next;
            if !state.passed.remove(&next) {
                break;
            }
            state.next += 1;
        }
        self.moved.notify_all();
    }
}

/// The two steps every archive goes through.
pub struct Pipeline {
    store: Turns,
    finish: Turns,
    /// From now on, an archive stores only once every archive before it has finished.
    alone: AtomicBool,
}

impl Pipeline {
    pub fn new() -> Pipeline {
        Pipeline {
            store: Turns::new(),
            finish: Turns::new(),
            alone: AtomicBool::new(false),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum At {
    Before,
    Storing,
    Finishing,
}

/// One archive's way through the pipeline (a no-op without one). Whatever way the archive
/// leaves (failed, skipped, dry run), dropping this passes the turns it holds or has not
/// taken, so the archives after it never wait for it.
pub struct Passage<'a> {
    pipeline: Option<&'a Pipeline>,
    i: usize,
    at: Cell<At>,
    /// An archive before this one was still being finished when this one began to store.
    overlapped: Cell<bool>,
}

impl<'a> Passage<'a> {
    pub fn new(pipeline: Option<&'a Pipeline>, i: usize) -> Passage<'a> {
        Passage {
            pipeline,
            i,
            at: Cell::new(At::Before),
            overlapped: Cell::new(false),
        }
    }

    /// Wait for this archive's turn to store its content. An archive may read before its
    /// turn: it waits here before the first thing it writes.
    pub fn store(&self) {
        let Some(p) = self.pipeline else { return };
        if self.at.get() != At::Before {
            return;
        }
        p.store.wait(self.i);
        if p.alone.load(Ordering::SeqCst) {
            p.finish.wait(self.i);
        }
        self.overlapped.set(!p.finish.reached(self.i));
        self.at.set(At::Storing);
    }

    /// Whether an archive before this one was being finished while this one stored: what it
    /// wrote meanwhile (a layer unpacked) may be why this one found the disk full.
    pub fn overlapped(&self) -> bool {
        self.overlapped.get()
    }

    /// Wait, still holding the turn to store, until every archive before this one has
    /// finished; and from now on, no archive stores while another one finishes.
    pub fn alone(&self) {
        let Some(p) = self.pipeline else { return };
        p.alone.store(true, Ordering::SeqCst);
        p.finish.wait(self.i);
        self.overlapped.set(false);
    }

    /// Let the next archive store, and wait for this one's turn to finish: its result is
    /// then in plan order too.
    pub fn finish(&self) {
        let Some(p) = self.pipeline else { return };
        if self.at.get() == At::Finishing {
            return;
        }
        p.store.pass(self.i);
        p.finish.wait(self.i);
        self.at.set(At::Finishing);
    }
}

impl Drop for Passage<'_> {
    /// The turns not taken are passed without waiting for them: an archive that left does
    /// nothing the others must come after.
    fn drop(&mut self) {
        let Some(p) = self.pipeline else { return };
        if self.at.get() != At::Finishing {
            p.store.pass(self.i);
        }
        p.finish.pass(self.i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

    /// Six archives on two workers, two of them leaving before their first step: each step
    /// sees the others in plan order, nobody waits forever, and archive 0 finishes while
    /// archive 1 stores (archive 0's finish waits for that, up to 10 s).
    #[test]
    fn both_steps_go_in_plan_order_and_overlap_even_when_some_archives_leave_early() {
        let pipeline = Pipeline::new();
        let next = AtomicUsize::new(0);
        let stored = Mutex::new(Vec::new());
        let finished = Mutex::new(Vec::new());
        let overlapped = AtomicUsize::new(0);
        thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= 6 {
                        break;
                    }
                    let passage = Passage::new(Some(&pipeline), i);
                    if i % 3 == 2 {
                        continue; // left early: the drop passes its turns
                    }
                    passage.store();
                    stored.lock().unwrap().push(i);
                    passage.finish();
                    if i == 0 {
                        for _ in 0..1000 {
                            if stored.lock().unwrap().contains(&1) {
                                overlapped.store(1, Ordering::SeqCst);
                                break;
                            }
                            thread::sleep(Duration::from_millis(10));
                        }
                    }
                    finished.lock().unwrap().push(i);
                });
            }
        });
        assert_eq!(*stored.lock().unwrap(), vec![0, 1, 3, 4]);
        assert_eq!(*finished.lock().unwrap(), vec![0, 1, 3, 4]);
        assert_eq!(
            overlapped.load(Ordering::SeqCst),
            1,
            "archive 1 never stored while 0 finished"
        );
    }

    /// Archive 1 found the disk full while archive 0 was finishing: once it asks to go on
    /// alone, it goes on only after 0 has finished, and no later archive stores while
    /// another one finishes.
    #[test]
    fn after_an_archive_goes_alone_the_steps_no_longer_overlap() {
        let pipeline = Pipeline::new();
        let next = AtomicUsize::new(0);
        let events = Mutex::new(Vec::new());
        let say = |e: String| events.lock().unwrap().push(e);
        thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= 4 {
                        break;
                    }
                    let passage = Passage::new(Some(&pipeline), i);
                    passage.store();
                    say(format!("store {i}"));
                    if i == 1 {
                        assert!(
                            passage.overlapped()
                                || events.lock().unwrap().contains(&"finished 0".to_string())
                        );
                        passage.alone();
                        say("again 1".to_string());
                    }
                    passage.finish();
                    thread::sleep(Duration::from_millis(20));
                    say(format!("finished {i}"));
                });
            }
        });
        let events = events.into_inner().unwrap();
        let at = |e: &str| events.iter().position(|x| x == e).unwrap();
        assert!(at("finished 0") < at("again 1"), "{events:?}");
        assert!(at("finished 1") < at("store 2"), "{events:?}");
        assert!(at("finished 2") < at("store 3"), "{events:?}");
    }

    #[test]
    fn without_a_pipeline_a_passage_waits_for_nothing() {
        let passage = Passage::new(None, 7);
        passage.store();
        passage.finish();
    }
}

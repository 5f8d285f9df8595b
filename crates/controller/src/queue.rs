//! The work queue: keys with the instant they are due, merged (a key is in
//! the queue at most once, at its earliest time), never handed out while a
//! reconcile of the same key runs (it is parked and comes back when that one
//! ends). Pure bookkeeping: the [`crate::Controller`] drives it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;

use tokio::time::Instant;

/// What the queue holds.
#[derive(Debug)]
pub struct Queue<K> {
    /// Due keys in time order; the sequence number keeps equal times apart.
    due: BTreeMap<(Instant, u64), K>,
    /// Each queued key's place in `due`.
    at: HashMap<K, (Instant, u64)>,
    /// Keys being reconciled now.
    running: HashSet<K>,
    /// Keys enqueued while running, with their earliest due time.
    parked: HashMap<K, Instant>,
    seq: u64,
}

/// What [`Queue::pop`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<K> {
    /// This key is due: reconcile it now.
    Key(K),
    /// Nothing is due before this instant.
    At(Instant),
    /// The queue is empty.
    Empty,
}

impl<K: Clone + Eq + Hash> Default for Queue<K> {
    fn default() -> Self {
        Queue {
            due: BTreeMap::new(),
            at: HashMap::new(),
            running: HashSet::new(),
            parked: HashMap::new(),
            seq: 0,
        }
    }
}

impl<K: Clone + Eq + Hash> Queue<K> {
    /// Queues `key` for `when`, or moves it earlier if it is queued later.
    /// A running key is parked until its reconcile ends.
    pub fn push(&mut self, key: K, when: Instant) {
        if self.running.contains(&key) {
            let slot = self.parked.entry(key).or_insert(when);
            *slot = (*slot).min(when);
            return;
        }
        if let Some(&(t, seq)) = self.at.get(&key) {
            if t <= when {
                return;
            }
            self.due.remove(&(t, seq));
        }
        self.seq += 1;
        self.due.insert((when, self.seq), key.clone());
        self.at.insert(key, (when, self.seq));
    }

    /// Takes the first key due at `now` and marks it running.
    pub fn pop(&mut self, now: Instant) -> Next<K> {
        let Some((&(t, seq), _)) = self.due.first_key_value() else {
            return Next::Empty;
        };
        if t > now {
            return Next::At(t);
        }
        let key = self.due.remove(&(t, seq)).expect("first key exists");
        self.at.remove(&key);
        self.running.insert(key.clone());
        Next::Key(key)
    }

    /// Ends `key`'s reconcile; `requeue` is when it asked to run again. A
    /// key parked meanwhile comes back at the earlier of the two times.
    pub fn done(&mut self, key: &K, requeue: Option<Instant>) {
        self.running.remove(key);
        let parked = self.parked.remove(key);
        let when = match (parked, requeue) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(when) = when {
            self.push(key.clone(), when);
        }
    }

    /// Keys waiting (queued or parked).
    pub fn len(&self) -> usize {
        self.due.len() + self.parked.len()
    }

    /// Keys being reconciled.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Whether `key` is queued, parked or running.
    pub fn contains(&self, key: &K) -> bool {
        self.at.contains_key(key) || self.running.contains(key) || self.parked.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn duplicate_keys_merge_at_the_earliest_time() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.push("a", now + ms(50));
        q.push("a", now + ms(10));
        q.push("a", now + ms(90));
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop(now), Next::At(now + ms(10)));
        assert_eq!(q.pop(now + ms(10)), Next::Key("a"));
        assert_eq!(q.pop(now + ms(100)), Next::Empty);
    }

    #[test]
    fn keys_come_out_in_time_order() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.push("late", now + ms(20));
        q.push("early", now + ms(5));
        q.push("now", now);
        let t = now + ms(30);
        assert_eq!(q.pop(t), Next::Key("now"));
        assert_eq!(q.pop(t), Next::Key("early"));
        assert_eq!(q.pop(t), Next::Key("late"));
    }

    #[test]
    fn a_running_key_is_never_handed_out_twice() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.push("a", now);
        assert_eq!(q.pop(now), Next::Key("a"));
        // Triggers fire while it runs: parked, not due.
        q.push("a", now);
        q.push("a", now);
        assert_eq!(q.pop(now), Next::Empty);
        assert!(q.contains(&"a"));
        // It ends: the parked trigger makes it due once.
        q.done(&"a", None);
        assert_eq!(q.pop(now), Next::Key("a"));
        q.done(&"a", None);
        assert_eq!(q.pop(now), Next::Empty);
        assert!(!q.contains(&"a"));
    }

    #[test]
    fn requeue_and_parked_trigger_take_the_earlier() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.push("a", now);
        assert_eq!(q.pop(now), Next::Key("a"));
        q.push("a", now + ms(5));
        q.done(&"a", Some(now + ms(60)));
        assert_eq!(q.pop(now), Next::At(now + ms(5)));
        assert_eq!(q.len(), 1);
    }
}

//! Per-function state looked up on every request and added once per
//! function: read without a lock (`arc-swap`), written copy-on-write.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use bismuth_model::FunctionId;

/// A map of functions to shared values, lock-free to read.
#[derive(Debug)]
pub struct CowMap<V>(ArcSwap<HashMap<FunctionId, Arc<V>>>);

impl<V> Default for CowMap<V> {
    fn default() -> Self {
        CowMap(ArcSwap::default())
    }
}

impl<V> CowMap<V> {
    /// The function's value, made by `make` the first time (if two threads
    /// race, both get the one that went in).
    pub fn get_or_insert_with(&self, function: FunctionId, make: impl FnOnce() -> V) -> Arc<V> {
        if let Some(v) = self.0.load().get(&function) {
            return Arc::clone(v);
        }
        let made = Arc::new(make());
        self.0.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.entry(function).or_insert_with(|| Arc::clone(&made));
            map
        });
        self.0.load().get(&function).map_or(made, Arc::clone)
    }

    /// The current map.
    pub fn load(&self) -> Guard<Arc<HashMap<FunctionId, Arc<V>>>> {
        self.0.load()
    }

    /// Keeps only the entries `keep` accepts (no copy when it accepts all).
    pub fn retain(&self, keep: impl Fn(&FunctionId, &V) -> bool) {
        if self.0.load().iter().all(|(id, v)| keep(id, v)) {
            return;
        }
        self.0.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.retain(|id, v| keep(id, v));
            map
        });
    }
}

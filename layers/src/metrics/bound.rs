//! Instruments bound to the label sets requests use again and again (the metrics layers
//! use it, and so can an embedder's own instruments).
//!
//! An unbound record hashes every attribute (SipHash over each key and value) and looks the
//! set up under the SDK's lock on every call: about half of what a request's metrics cost.
//! A bound handle (OpenTelemetry's `bind`, the `experimental_metrics_bound_instruments`
//! feature that this crate turns on for the API and the SDK) writes to its series directly.
//! The layers keep one [`Series`] of handles per label set, looked up once per request
//! instead of once per record, and bind each handle at its first record ([`record`],
//! [`add`]), so a series that was never recorded is not exported (binding creates the
//! series, with a zero count).
//!
//! A meter must come from `opentelemetry_sdk`: an API implementation that does not
//! implement `bind` returns handles that drop what they are given.

use opentelemetry::metrics::{BoundCounter, BoundHistogram, Counter, Histogram};
use opentelemetry::KeyValue;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, OnceLock, RwLock};

/// Label sets that get bound handles; past this, records carry their attributes (the same
/// series, found by the SDK's own lookup). Labels are bounded already (see the module
/// docs): this only caps what a catalog that keeps changing can leave behind.
pub const MAX_SETS: usize = 1024;

/// The bound handles of each label set seen, by key (`V`: a struct of `OnceLock`s, one per
/// instrument and fixed extra label).
#[derive(Debug)]
pub struct Series<K, V> {
    sets: RwLock<HashMap<K, Arc<V>>>,
    max_sets: usize,
}

impl<K: Hash + Eq, V: Default> Series<K, V> {
    /// At most `max_sets` label sets bound ([`MAX_SETS`]; the tests compare 0, 1 and more).
    pub fn with_max_sets(max_sets: usize) -> Self {
        Self {
            sets: RwLock::new(HashMap::new()),
            max_sets,
        }
    }

    /// The handles for `key`, made empty at its first use; `None` past the cap of sets.
    pub fn get(&self, key: K) -> Option<Arc<V>> {
        if let Ok(sets) = self.sets.read() {
            if let Some(handles) = sets.get(&key) {
                return Some(Arc::clone(handles));
            }
        }
        let mut sets = self.sets.write().ok()?;
        if sets.len() >= self.max_sets && !sets.contains_key(&key) {
            return None;
        }
        Some(Arc::clone(sets.entry(key).or_default()))
    }
}

/// Records `value` through the handle in `slot` (bound to `attributes` at its first
/// record), or with `attributes` when there is no slot.
pub fn record<T, A>(
    histogram: &Histogram<T>,
    slot: Option<&OnceLock<BoundHistogram<T>>>,
    value: T,
    attributes: impl FnOnce() -> A,
) where
    A: AsRef<[KeyValue]>,
{
    match slot {
        Some(slot) => slot
            .get_or_init(|| histogram.bind(attributes().as_ref()))
            .record(value),
        None => histogram.record(value, attributes().as_ref()),
    }
}

/// Adds `value` through the handle in `slot` (bound to `attributes` at its first add), or
/// with `attributes` when there is no slot.
pub fn add<T, A>(
    counter: &Counter<T>,
    slot: Option<&OnceLock<BoundCounter<T>>>,
    value: T,
    attributes: impl FnOnce() -> A,
) where
    A: AsRef<[KeyValue]>,
{
    match slot {
        Some(slot) => slot
            .get_or_init(|| counter.bind(attributes().as_ref()))
            .add(value),
        None => counter.add(value, attributes().as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_the_same_handles_each_time_and_new_keys_stop_at_the_cap() {
        let series: Series<usize, OnceLock<u8>> = Series::with_max_sets(MAX_SETS);
        let first = series.get(7).unwrap();
        assert!(first.set(1).is_ok());
        assert_eq!(series.get(7).unwrap().get(), Some(&1));
        for key in 0..MAX_SETS {
            assert!(series.get(key).is_some(), "key {key} under the cap");
        }
        assert!(series.get(MAX_SETS).is_none(), "a new key past the cap");
        assert_eq!(series.get(7).unwrap().get(), Some(&1), "a known key still");
    }
}

//! A map with a size bound: when full, the oldest insertion goes first.
use std::collections::{HashMap, VecDeque};

/// Keyed by container or sandbox id. `forget` is O(1); the insertion-order queue is compacted
/// when forgotten entries pile up in it, so it stays O(bound).
#[derive(Debug)]
pub(crate) struct BoundedCache<V> {
    map: HashMap<String, (u64, V)>,
    order: VecDeque<(u64, String)>,
    seq: u64,
    bound: usize,
}

impl<V> BoundedCache<V> {
    pub(crate) fn new(bound: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
            bound,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn get(&self, id: &str) -> Option<&V> {
        self.map.get(id).map(|(_, v)| v)
    }

    /// Inserts or replaces; returns how many entries were evicted to stay within the bound.
    pub(crate) fn insert(&mut self, id: String, v: V) -> usize {
        if self.bound == 0 {
            return 0;
        }
        self.seq += 1;
        self.order.push_back((self.seq, id.clone()));
        self.map.insert(id, (self.seq, v));
        let mut evicted = 0;
        while self.map.len() > self.bound {
            let Some((seq, old)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|(s, _)| *s == seq) {
                self.map.remove(&old);
                evicted += 1;
            }
        }
        if self.order.len() > 2 * self.bound + 16 {
            let map = &self.map;
            self.order
                .retain(|(seq, id)| map.get(id).is_some_and(|(s, _)| s == seq));
        }
        evicted
    }

    pub(crate) fn remove(&mut self, id: &str) -> Option<V> {
        self.map.remove(id).map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_and_forgets() {
        let mut c = BoundedCache::new(2);
        assert_eq!(c.insert("a".into(), 1), 0);
        assert_eq!(c.insert("b".into(), 2), 0);
        assert_eq!(c.insert("a".into(), 3), 0, "replacing is not growing");
        assert_eq!(c.insert("c".into(), 4), 1);
        assert_eq!(c.get("b"), None, "b was the oldest insertion");
        assert_eq!((c.get("a"), c.get("c")), (Some(&3), Some(&4)));
        assert_eq!(c.remove("a"), Some(3));
        assert_eq!(c.len(), 1);
        for i in 0..1000 {
            c.insert(format!("x{i}"), i);
            c.remove(&format!("x{i}"));
        }
        assert!(c.order.len() <= 2 * 2 + 16 + 1, "order queue compacted");
        assert_eq!(c.get("c"), Some(&4));
        let mut none = BoundedCache::new(0);
        none.insert("a".into(), 1);
        assert_eq!(none.len(), 0);
    }
}

//! Shared copies of the texts that events repeat: comm, exec'd filename and argv.
//!
//! A node runs the same few programs again and again (probes, shells, cron jobs), and each
//! process's table entry and each of its events hold these texts. Without sharing, every
//! process allocates its own copies (an argv is one allocation per argument) and frees them
//! when it is dropped from the table, long after, from cold memory. Here a text seen
//! recently is handed out again as the same `Arc`.
//!
//! A small direct-mapped cache: a slot per hash of the text, the newest text in the slot
//! wins. Bounded (the slots), deterministic (what comes out is always equal to what went
//! in, whatever the cache held), and a miss costs only the hash and a comparison.
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Slots per kind of text (a power of two).
const SLOTS: usize = 256;

struct Slots<T: ?Sized> {
    slots: Vec<Option<Arc<T>>>,
}

impl<T: ?Sized + PartialEq + Hash> Slots<T> {
    fn new() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| None).collect(),
        }
    }

    /// The shared copy of `value`; `make` makes one when the slot holds another text.
    fn get(&mut self, value: &T, make: impl FnOnce(&T) -> Arc<T>) -> Arc<T> {
        let mut h = rustc_hash::FxHasher::default();
        value.hash(&mut h);
        let i = (h.finish() >> 32) as usize % SLOTS;
        match self.slots.get_mut(i) {
            Some(Some(a)) if **a == *value => a.clone(),
            Some(slot) => slot.insert(make(value)).clone(),
            None => make(value),
        }
    }
}

pub struct Interner {
    comm: Slots<str>,
    filename: Slots<str>,
    argv: Slots<[String]>,
    no_argv: Arc<[String]>,
}

impl Default for Interner {
    fn default() -> Self {
        Self {
            comm: Slots::new(),
            filename: Slots::new(),
            argv: Slots::new(),
            no_argv: Arc::from([]),
        }
    }
}

impl Interner {
    pub fn comm(&mut self, comm: &str) -> Arc<str> {
        self.comm.get(comm, |v| Arc::from(v))
    }

    pub fn filename(&mut self, filename: &str) -> Arc<str> {
        self.filename.get(filename, |v| Arc::from(v))
    }

    pub fn argv(&mut self, argv: &[String]) -> Arc<[String]> {
        if argv.is_empty() {
            return self.no_argv.clone();
        }
        self.argv.get(argv, |v| Arc::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_share_one_copy_and_any_text_comes_back_equal() {
        let mut i = Interner::default();
        let a = i.comm("sh");
        assert!(Arc::ptr_eq(&a, &i.comm("sh")));
        let argv = vec!["/bin/sh".to_string(), "-c".into()];
        assert!(Arc::ptr_eq(&i.argv(&argv), &i.argv(&argv)));
        assert!(Arc::ptr_eq(&i.argv(&[]), &i.argv(&[])));
        // Far more texts than slots: each still comes back as itself.
        for n in 0..(4 * SLOTS) {
            let s = format!("comm-{n}");
            assert_eq!(&*i.comm(&s), s);
            assert_eq!(&*i.filename(&s), s);
            assert_eq!(&*i.argv(std::slice::from_ref(&s)), std::slice::from_ref(&s));
        }
    }
}

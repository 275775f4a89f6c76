//! Components by a stable index.
//!
//! Messages about a component (exits, timers, probe results) carry its index, and a reload
//! adds and removes components while those messages are in flight. So an index is never
//! reused: a removed component leaves an empty slot, a message for it finds nothing and is
//! dropped, and the indices of the others never shift.

/// A vector whose removed entries leave a hole instead of shifting the rest.
#[derive(Debug)]
pub struct Slots<T> {
    items: Vec<Option<T>>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots { items: Vec::new() }
    }
}

impl<T> Slots<T> {
    /// Stores `item` under a new index, one past every index handed out before.
    pub fn push(&mut self, item: T) -> usize {
        self.items.push(Some(item));
        self.items.len() - 1
    }

    /// Takes the item out; its index stays empty for good.
    pub fn remove(&mut self, idx: usize) -> Option<T> {
        self.items.get_mut(idx).and_then(Option::take)
    }

    pub fn get(&self, idx: usize) -> Option<&T> {
        self.items.get(idx).and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, idx: usize) -> Option<&mut T> {
        self.items.get_mut(idx).and_then(Option::as_mut)
    }

    /// The indices in use, in order (a snapshot: safe to mutate while walking it).
    pub fn indices(&self) -> Vec<usize> {
        self.iter().map(|(i, _)| i).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.items
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.as_ref().map(|t| (i, t)))
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.items.iter().flatten()
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.items.iter_mut().flatten()
    }
}

/// Indexing an empty slot is a bug in the caller: only indices known to be live (members of
/// a pipeline, dependencies of a live component) are indexed directly.
impl<T> std::ops::Index<usize> for Slots<T> {
    type Output = T;
    fn index(&self, idx: usize) -> &T {
        self.get(idx)
            .unwrap_or_else(|| panic!("component slot {idx} is empty"))
    }
}

impl<T> std::ops::IndexMut<usize> for Slots<T> {
    fn index_mut(&mut self, idx: usize) -> &mut T {
        self.get_mut(idx)
            .unwrap_or_else(|| panic!("component slot {idx} is empty"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_leaves_other_indices_in_place_and_never_reuses_one() {
        let mut s = Slots::default();
        let a = s.push("a");
        let b = s.push("b");
        let c = s.push("c");
        assert_eq!(s.remove(b), Some("b"));
        assert_eq!(s.get(b), None);
        assert_eq!((s[a], s[c]), ("a", "c"));
        let d = s.push("d");
        assert_eq!(d, 3);
        assert_eq!(s.indices(), vec![0, 2, 3]);
        assert_eq!(s.remove(b), None);
        assert_eq!(s.values().copied().collect::<Vec<_>>(), vec!["a", "c", "d"]);
    }
}

//! In-memory records keyed by id, optionally with unique names, safe to use
//! from many requests at once.
//!
//! Every operation takes the lock once and does its checks and its change
//! under it, so concurrent requests cannot lose updates or slip a duplicate
//! past a check. A [`Reservation`] holds an id and a name while a record is
//! being created elsewhere (film-service registers the rating first): other
//! creators see them as taken, readers do not see the record until it is
//! committed, and dropping the reservation releases both.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use uuid::Uuid;

/// A record the catalog can hold.
pub trait Record: Clone + Send + Sync + 'static {
    /// The record's id; unique in a catalog.
    fn id(&self) -> Uuid;
    /// The record's name; unique if the catalog says so.
    fn name(&self) -> &str;
}

/// Whether two records may share a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// A second record with a taken name is refused.
    Unique,
    /// Names may repeat; a lookup by name finds the newest record.
    Shared,
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The id is held by a record or a reservation.
    #[error("id {0} is already taken")]
    IdTaken(Uuid),
    /// The name is held by another record or a reservation.
    #[error("name {0:?} is already taken")]
    NameTaken(String),
    /// No record has the id.
    #[error("no record with id {0}")]
    NotFound(Uuid),
}

/// A shared handle to one catalog; clones see the same records.
pub struct Catalog<T> {
    inner: Arc<RwLock<Inner<T>>>,
    names: Names,
}

impl<T> Clone for Catalog<T> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), names: self.names }
    }
}

struct Inner<T> {
    next_seq: u64,
    /// Records in creation order.
    by_seq: BTreeMap<u64, T>,
    seq_of: HashMap<Uuid, u64>,
    by_name: HashMap<String, BTreeSet<u64>>,
    reserved_ids: HashSet<Uuid>,
    reserved_names: HashSet<String>,
}

impl<T: Record> Inner<T> {
    fn id_free(&self, id: Uuid) -> Result<(), CatalogError> {
        if self.seq_of.contains_key(&id) || self.reserved_ids.contains(&id) {
            return Err(CatalogError::IdTaken(id));
        }
        Ok(())
    }

    /// Whether `name` may be given to the record `owner` (None: a new one).
    fn name_free(&self, names: Names, name: &str, owner: Option<Uuid>) -> Result<(), CatalogError> {
        if names == Names::Shared {
            return Ok(());
        }
        let held_by_other = self
            .by_name
            .get(name)
            .is_some_and(|seqs| seqs.iter().filter_map(|seq| self.by_seq.get(seq)).any(|r| Some(r.id()) != owner));
        if held_by_other || self.reserved_names.contains(name) {
            return Err(CatalogError::NameTaken(name.to_owned()));
        }
        Ok(())
    }

    fn insert(&mut self, record: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.seq_of.insert(record.id(), seq);
        self.by_name.entry(record.name().to_owned()).or_default().insert(seq);
        self.by_seq.insert(seq, record);
    }

    fn unindex_name(&mut self, name: &str, seq: u64) {
        if let Some(seqs) = self.by_name.get_mut(name) {
            seqs.remove(&seq);
            if seqs.is_empty() {
                self.by_name.remove(name);
            }
        }
    }
}

impl<T: Record> Catalog<T> {
    /// An empty catalog.
    pub fn new(names: Names) -> Self {
        Self {
            inner: Arc::new(RwLock::new(Inner {
                next_seq: 0,
                by_seq: BTreeMap::new(),
                seq_of: HashMap::new(),
                by_name: HashMap::new(),
                reserved_ids: HashSet::new(),
                reserved_names: HashSet::new(),
            })),
            names,
        }
    }

    // A panic while the lock was held cannot leave the maps half-updated
    // (each change is a few infallible inserts), so a poisoned lock is used
    // as is rather than failing every later request.
    fn read(&self) -> RwLockReadGuard<'_, Inner<T>> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner<T>> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// All records, oldest first.
    pub fn list(&self) -> Vec<T> {
        self.read().by_seq.values().cloned().collect()
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.read().by_seq.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record with `id`.
    pub fn get(&self, id: Uuid) -> Option<T> {
        let inner = self.read();
        inner.seq_of.get(&id).and_then(|seq| inner.by_seq.get(seq)).cloned()
    }

    /// The newest record named exactly `name`.
    pub fn find_by_name(&self, name: &str) -> Option<T> {
        let inner = self.read();
        let seq = inner.by_name.get(name)?.last()?;
        inner.by_seq.get(seq).cloned()
    }

    /// Adds `record` unless its id (or, for unique names, its name) is taken.
    pub fn insert(&self, record: T) -> Result<T, CatalogError> {
        let mut inner = self.write();
        inner.id_free(record.id())?;
        inner.name_free(self.names, record.name(), None)?;
        inner.insert(record.clone());
        Ok(record)
    }

    /// Holds `id` and `name` for a record that will be committed later.
    pub fn reserve(&self, id: Uuid, name: &str) -> Result<Reservation<T>, CatalogError> {
        let mut inner = self.write();
        inner.id_free(id)?;
        inner.name_free(self.names, name, None)?;
        inner.reserved_ids.insert(id);
        if self.names == Names::Unique {
            inner.reserved_names.insert(name.to_owned());
        }
        Ok(Reservation { catalog: self.clone(), id, name: name.to_owned(), released: false })
    }

    /// Replaces the record with `record.id()` by `record`, keeping its place
    /// in the listing.
    pub fn replace(&self, record: T) -> Result<T, CatalogError> {
        let mut inner = self.write();
        let id = record.id();
        let Some(&seq) = inner.seq_of.get(&id) else {
            return Err(CatalogError::NotFound(id));
        };
        inner.name_free(self.names, record.name(), Some(id))?;
        let old_name = inner.by_seq.get(&seq).map(|r| r.name().to_owned());
        if let Some(old_name) = old_name.filter(|old| old != record.name()) {
            inner.unindex_name(&old_name, seq);
            inner.by_name.entry(record.name().to_owned()).or_default().insert(seq);
        }
        inner.by_seq.insert(seq, record.clone());
        Ok(record)
    }

    /// Removes and returns the record with `id`.
    pub fn remove(&self, id: Uuid) -> Option<T> {
        let mut inner = self.write();
        let seq = inner.seq_of.remove(&id)?;
        let record = inner.by_seq.remove(&seq)?;
        inner.unindex_name(record.name(), seq);
        Some(record)
    }
}

/// An id and name held for a record being created; see the module docs.
pub struct Reservation<T: Record> {
    catalog: Catalog<T>,
    id: Uuid,
    name: String,
    released: bool,
}

impl<T: Record> Reservation<T> {
    /// The reserved id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The reserved name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Stores the record `build` makes from the reserved id and name; from
    /// now on readers see it.
    pub fn commit(mut self, build: impl FnOnce(Uuid, String) -> T) -> T {
        let record = build(self.id, self.name.clone());
        debug_assert!(record.id() == self.id && record.name() == self.name);
        let mut inner = self.catalog.write();
        inner.reserved_ids.remove(&self.id);
        inner.reserved_names.remove(&self.name);
        inner.insert(record.clone());
        self.released = true;
        record
    }
}

impl<T: Record> Drop for Reservation<T> {
    fn drop(&mut self) {
        if !self.released {
            let mut inner = self.catalog.write();
            inner.reserved_ids.remove(&self.id);
            if self.catalog.names == Names::Unique {
                inner.reserved_names.remove(&self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Item {
        id: Uuid,
        name: String,
        note: u32,
    }

    impl Record for Item {
        fn id(&self) -> Uuid {
            self.id
        }
        fn name(&self) -> &str {
            &self.name
        }
    }

    fn item(name: &str, note: u32) -> Item {
        Item { id: Uuid::new_v4(), name: name.to_owned(), note }
    }

    #[test]
    fn insert_get_list_remove() {
        let c = Catalog::new(Names::Unique);
        let a = c.insert(item("a", 1)).unwrap();
        let b = c.insert(item("b", 2)).unwrap();
        assert_eq!(c.list(), vec![a.clone(), b.clone()]);
        assert_eq!(c.get(a.id), Some(a.clone()));
        assert_eq!(c.find_by_name("b"), Some(b.clone()));
        assert_eq!(c.remove(a.id), Some(a.clone()));
        assert_eq!(c.remove(a.id), None);
        assert_eq!(c.get(a.id), None);
        assert_eq!(c.find_by_name("a"), None);
        assert_eq!(c.len(), 1);
        // The name is free again once its record is gone.
        c.insert(item("a", 3)).unwrap();
    }

    #[test]
    fn ids_and_unique_names_conflict() {
        let c = Catalog::new(Names::Unique);
        let a = c.insert(item("a", 1)).unwrap();
        let same_id = Item { name: "z".into(), ..a.clone() };
        assert_eq!(c.insert(same_id), Err(CatalogError::IdTaken(a.id)));
        assert_eq!(c.insert(item("a", 2)), Err(CatalogError::NameTaken("a".into())));
        assert_eq!(c.list(), vec![a]);
    }

    #[test]
    fn shared_names_find_the_newest() {
        let c = Catalog::new(Names::Shared);
        c.insert(item("a", 1)).unwrap();
        let newer = c.insert(item("a", 2)).unwrap();
        assert_eq!(c.find_by_name("a"), Some(newer.clone()));
        c.remove(newer.id);
        assert_eq!(c.find_by_name("a").map(|r| r.note), Some(1));
    }

    #[test]
    fn reservation_is_invisible_but_blocks_until_committed() {
        let c = Catalog::new(Names::Unique);
        let id = Uuid::new_v4();
        let r = c.reserve(id, "a").unwrap();
        assert_eq!(c.get(id), None);
        assert_eq!(c.find_by_name("a"), None);
        assert!(c.list().is_empty());
        assert_eq!(c.insert(item("a", 1)), Err(CatalogError::NameTaken("a".into())));
        assert!(matches!(c.reserve(id, "b"), Err(CatalogError::IdTaken(_))));
        let stored = r.commit(|id, name| Item { id, name, note: 9 });
        assert_eq!(c.get(id), Some(stored));
        assert_eq!(c.insert(item("a", 1)), Err(CatalogError::NameTaken("a".into())));
    }

    #[test]
    fn dropped_reservation_releases_id_and_name() {
        let c = Catalog::<Item>::new(Names::Unique);
        let id = Uuid::new_v4();
        drop(c.reserve(id, "a").unwrap());
        assert!(c.is_empty());
        c.reserve(id, "a").unwrap().commit(|id, name| Item { id, name, note: 0 });
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn replace_keeps_position_and_checks_names() {
        let c = Catalog::new(Names::Unique);
        let a = c.insert(item("a", 1)).unwrap();
        let b = c.insert(item("b", 2)).unwrap();
        // Keeping one's own name is not a conflict.
        c.replace(Item { note: 5, ..a.clone() }).unwrap();
        let renamed = c.replace(Item { name: "c".into(), ..a.clone() }).unwrap();
        assert_eq!(c.list(), vec![renamed, b.clone()]);
        assert_eq!(c.find_by_name("a"), None);
        assert_eq!(c.find_by_name("c").map(|r| r.id), Some(a.id));
        assert_eq!(c.replace(Item { name: "b".into(), ..a.clone() }), Err(CatalogError::NameTaken("b".into())));
        let ghost = item("g", 0);
        assert_eq!(c.replace(ghost.clone()), Err(CatalogError::NotFound(ghost.id)));
        let _held = c.reserve(Uuid::new_v4(), "held").unwrap();
        assert_eq!(c.replace(Item { name: "held".into(), ..b }), Err(CatalogError::NameTaken("held".into())));
    }

    #[test]
    fn concurrent_inserts_lose_nothing_and_admit_one_per_name() {
        let c = Catalog::new(Names::Unique);
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    let mut won = 0;
                    for i in 0..200 {
                        c.insert(item(&format!("own-{t}-{i}"), i)).unwrap();
                        if c.insert(item(&format!("shared-{i}"), i)).is_ok() {
                            won += 1;
                        }
                    }
                    won
                })
            })
            .collect();
        let won: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(won, 200);
        assert_eq!(c.len(), 8 * 200 + 200);
    }
}

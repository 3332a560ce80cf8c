//! One suite of cases every store backend must pass, run against each of them: the same
//! commits, conflicts, journal records and listings, whatever holds them.

use super::{Batch, Commit, Listing, Recorded, Store};

fn record(key: &str, at: u64) -> Recorded {
    Recorded {
        key: key.into(),
        route: "r".into(),
        plugin: "p@v".into(),
        response: b"{}".to_vec(),
        at,
    }
}

fn write(ns: &str, key: &str, value: &[u8]) -> Batch {
    Batch {
        ns: ns.into(),
        writes: vec![(key.into(), Some(value.to_vec()))],
        ..Batch::default()
    }
}

pub fn commits_apply_whole_and_namespaces_are_separate(s: &dyn Store) {
    assert_eq!(s.commit(write("a", "k", b"1")).unwrap(), Commit::Done);
    assert_eq!(s.get("a", "k").unwrap(), Some(b"1".to_vec()));
    assert_eq!(s.get("b", "k").unwrap(), None);
    let delete = Batch {
        ns: "a".into(),
        writes: vec![("k".into(), None)],
        ..Batch::default()
    };
    assert_eq!(s.commit(delete).unwrap(), Commit::Done);
    assert_eq!(s.get("a", "k").unwrap(), None);
}

pub fn a_changed_read_or_listing_is_a_conflict_and_applies_nothing(s: &dyn Store) {
    s.commit(write("a", "seq", b"1")).unwrap();
    let stale = Batch {
        expect: vec![("seq".into(), None)],
        journal: Some(record("k1", 1)),
        ..write("a", "seq", b"2")
    };
    assert_eq!(s.commit(stale).unwrap(), Commit::Conflict);
    assert_eq!(s.get("a", "seq").unwrap(), Some(b"1".to_vec()));
    assert_eq!(s.recorded("k1").unwrap(), None);

    let listed = Batch {
        expect_lists: vec![Listing {
            prefix: "s".into(),
            limit: 10,
            keys: vec![],
        }],
        ..write("a", "other", b"x")
    };
    assert_eq!(s.commit(listed).unwrap(), Commit::Conflict);
    let fresh = Batch {
        expect: vec![("seq".into(), Some(b"1".to_vec()))],
        ..write("a", "seq", b"2")
    };
    assert_eq!(s.commit(fresh).unwrap(), Commit::Done);
}

pub fn the_journal_records_once_and_prunes_by_age(s: &dyn Store) {
    let first = Batch {
        journal: Some(record("k", 10)),
        ..write("a", "x", b"1")
    };
    assert_eq!(s.commit(first).unwrap(), Commit::Done);
    let again = Batch {
        journal: Some(record("k", 20)),
        ..write("a", "x", b"2")
    };
    assert_eq!(s.commit(again).unwrap(), Commit::Recorded(record("k", 10)));
    assert_eq!(s.get("a", "x").unwrap(), Some(b"1".to_vec()));
    s.commit(Batch {
        journal: Some(record("new", 30)),
        ..Batch::default()
    })
    .unwrap();
    assert_eq!(s.prune(20).unwrap(), 1);
    assert_eq!(s.recorded("k").unwrap(), None);
    assert!(s.recorded("new").unwrap().is_some());
}

pub fn listings_are_in_byte_order_within_the_namespace_and_limit(s: &dyn Store) {
    for key in ["p/b", "p/a", "q/a", "p/c"] {
        s.commit(write("a", key, b"")).unwrap();
    }
    s.commit(write("b", "p/z", b"")).unwrap();
    assert_eq!(s.list("a", "p/", 10).unwrap(), ["p/a", "p/b", "p/c"]);
    assert_eq!(s.list("a", "p/", 2).unwrap(), ["p/a", "p/b"]);
    assert_eq!(s.list("a", "", 10).unwrap().len(), 4);
}

/// Runs every case against a store `$make` builds for the case's name: the store, and the
/// directory to remove after the case, if it has one.
macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            #[test]
            fn commits_apply_whole_and_namespaces_are_separate() {
                let (store, dir) =
                    ($make)(stringify!(commits_apply_whole_and_namespaces_are_separate));
                super::commits_apply_whole_and_namespaces_are_separate(&*store);
                drop(store);
                if let Some(dir) = dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }

            #[test]
            fn a_changed_read_or_listing_is_a_conflict_and_applies_nothing() {
                let (store, dir) = ($make)(stringify!(
                    a_changed_read_or_listing_is_a_conflict_and_applies_nothing
                ));
                super::a_changed_read_or_listing_is_a_conflict_and_applies_nothing(&*store);
                drop(store);
                if let Some(dir) = dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }

            #[test]
            fn the_journal_records_once_and_prunes_by_age() {
                let (store, dir) = ($make)(stringify!(the_journal_records_once_and_prunes_by_age));
                super::the_journal_records_once_and_prunes_by_age(&*store);
                drop(store);
                if let Some(dir) = dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }

            #[test]
            fn listings_are_in_byte_order_within_the_namespace_and_limit() {
                let (store, dir) = ($make)(stringify!(
                    listings_are_in_byte_order_within_the_namespace_and_limit
                ));
                super::listings_are_in_byte_order_within_the_namespace_and_limit(&*store);
                drop(store);
                if let Some(dir) = dir {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
    };
}

conformance!(memory, |_case: &str| {
    let store: Box<dyn crate::store::Store> = Box::new(crate::store::memory::MemoryStore::new());
    (store, None::<std::path::PathBuf>)
});
conformance!(sqlite, |case: &str| {
    let (store, dir) = crate::store::sqlite::tests::temp_store(&format!("conformance-{case}"));
    let store: Box<dyn crate::store::Store> = Box::new(store);
    (store, Some(dir))
});

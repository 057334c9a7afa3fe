//! The embedded backend passes the store conformance suite, with fsync on.

use std::any::Any;
use std::sync::Arc;

use kelson_store::{EmbeddedStore, Options, Store};

async fn new_store() -> (Arc<dyn Store>, Box<dyn Any + Send>) {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        compaction: None,
        ..Options::default()
    };
    let store = EmbeddedStore::open(dir.path().join("store.redb"), options)
        .await
        .unwrap();
    (Arc::new(store), Box::new(dir))
}

kelson_store_conformance::conformance_tests!(new_store);

//! The store suite against the embedded sled backend, on disk.

async fn fresh() -> (settle_store_sled::SledStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = settle_store_sled::SledStore::open(
        &dir.path().join("store"),
        &settle_store_sled::StoreOptions::default(),
    )
    .expect("a fresh store opens");
    (store, dir)
}

settle_store_tests::store_suite!(fresh());

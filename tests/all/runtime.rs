//! Plugins are compiled once: a second start reads the precompiled form from
//! the on-disk cache, keyed by content digest.

use crate::support;
use settle::app::Host;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_start_reads_compiled_plugins_from_the_cache() {
    let dir = support::tempdir();
    let mut config = support::config(dir.path());
    config.cache_dir = Some(dir.path().join("fresh-cache"));
    let first = {
        let host = Host::start(&config).await.unwrap();
        assert!(host.load_errors.is_empty(), "{:?}", host.load_errors);
        host.runtime.plugins()
    };
    assert_eq!(first.len(), 6);
    assert!(
        first.iter().all(|p| !p.from_cache),
        "a fresh cache compiles"
    );
    let cached = std::fs::read_dir(dir.path().join("fresh-cache"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .count();
    assert_eq!(cached, 6, "one compiled artifact per plugin");

    let host = crate::idempotency::reopen(&config).await;
    let second = host.runtime.plugins();
    assert!(
        second.iter().all(|p| p.from_cache),
        "the second start does not recompile"
    );
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.digest, b.digest);
        eprintln!(
            "{}: compiled in {:?}, loaded from cache in {:?}",
            a.name, a.load_time, b.load_time
        );
    }
}

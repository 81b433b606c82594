//! Key layout. Everything lives in one sled tree, so one atomic batch covers
//! an event and all its index entries (sled batches are atomic within a tree;
//! multi-tree transactions cost several times more). A one-byte prefix names
//! the record kind; big-endian integers make the hot reads range scans:
//!
//! | prefix | key | value |
//! | --- | --- | --- |
//! | `e` | run id (16, UUID v7) ++ seq (u64 BE) | event (JSON) |
//! | `r` | run id | run summary (JSON) |
//! | `a` | run id of every non-terminal run | empty |
//! | `c` | due ms (u64 BE) ++ run id of a settled run checked again later | empty (may be stale: the summary decides) |
//! | `t` | (no longer written: stores of earlier versions; `reindex` drops them) | |
//! | `i` | flow ++ 0x00 ++ idempotency key | run id ++ accepted ms (u64 BE) |
//! | `k` | plugin ++ 0x00 ++ key | plugin's value |
//! | `f` | flow digest (hex) | flow text (what runs were accepted under) |

use settle_types::RunId;

pub const EVENT: u8 = b'e';
pub const RUN: u8 = b'r';
pub const ACTIVE: u8 = b'a';
pub const RECHECK: u8 = b'c';
pub const TIMER: u8 = b't';
pub const IDEMPOTENCY: u8 = b'i';
pub const KV: u8 = b'k';
pub const FLOW: u8 = b'f';

/// Every prefix that holds derived data, which `reindex` rebuilds (and, for
/// `TIMER`, drops: no longer written).
pub const INDEXES: [u8; 5] = [RUN, ACTIVE, TIMER, IDEMPOTENCY, RECHECK];

pub fn event(run: RunId, seq: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[0] = EVENT;
    k[1..17].copy_from_slice(run.as_bytes());
    k[17..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// An entry of the recheck index: due time first, so a range read up to
/// now finds what is due, earliest first.
pub fn recheck(due_ms: u64, run: RunId) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[0] = RECHECK;
    k[1..9].copy_from_slice(&due_ms.to_be_bytes());
    k[9..].copy_from_slice(run.as_bytes());
    k
}

/// (due, run) of a recheck index key.
pub fn parse_recheck(key: &[u8]) -> Option<(u64, RunId)> {
    if key.len() != 25 || key[0] != RECHECK {
        return None;
    }
    let due = u64::from_be_bytes(key[1..9].try_into().ok()?);
    Some((due, RunId::from_slice(&key[9..])?))
}

pub fn events_of(run: RunId) -> [u8; 17] {
    run_key(EVENT, run)
}

pub fn run_key(prefix: u8, run: RunId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = prefix;
    k[1..].copy_from_slice(run.as_bytes());
    k
}

fn scoped(prefix: u8, scope: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + scope.len() + key.len());
    k.push(prefix);
    k.extend_from_slice(scope.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

pub fn idempotency(flow: &str, key: &str) -> Vec<u8> {
    scoped(IDEMPOTENCY, flow, key)
}

pub fn kv(plugin: &str, key: &str) -> Vec<u8> {
    scoped(KV, plugin, key)
}

pub fn flow(digest: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + digest.len());
    k.push(FLOW);
    k.extend_from_slice(digest.as_bytes());
    k
}

pub fn idempotency_value(run: RunId, accepted_ms: u64) -> [u8; 24] {
    let mut v = [0u8; 24];
    v[..16].copy_from_slice(run.as_bytes());
    v[16..].copy_from_slice(&accepted_ms.to_be_bytes());
    v
}

pub fn parse_idempotency_value(v: &[u8]) -> Option<(RunId, u64)> {
    if v.len() != 24 {
        return None;
    }
    Some((
        RunId::from_slice(&v[..16])?,
        u64::from_be_bytes(v[16..].try_into().ok()?),
    ))
}

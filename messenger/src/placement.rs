//! Placement: which shard of a node owns a process.
//!
//! A pure function of the process id and the shard count, so that a client, a load balancer or
//! another node can compute it without asking:
//!
//! ```text
//! key   = the first 8 bytes of the process id (an ANS-104 id: SHA-256 of a signature),
//!         read as a little-endian u64
//! shard = jump_consistent_hash(key, shards)        (Lamping and Veach, 2014)
//! ```
//!
//! Jump consistent hash spreads keys evenly and, when the shard count grows from `n` to `n + 1`,
//! moves only the `1/(n+1)` of the processes that go to the new shard. A node's data dir records
//! its shard count, and the node refuses to start with another (its logs are per shard; moving
//! processes between them is not supported).

use scheduler::ProcessId;

/// The shard (in `0..shards`) that owns `process`. `shards` must be at least 1.
pub fn shard_of(process: &ProcessId, shards: usize) -> usize {
    let key = u64::from_le_bytes(process.0[..8].try_into().expect("ids are 32 bytes"));
    jump_consistent_hash(key, shards)
}

/// Lamping and Veach's jump consistent hash: a bucket in `0..buckets` for `key`.
pub fn jump_consistent_hash(mut key: u64, buckets: usize) -> usize {
    assert!(buckets >= 1, "placement needs at least one shard");
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shard_owns_everything() {
        for key in 0..1000u64 {
            assert_eq!(jump_consistent_hash(key.wrapping_mul(0x9e37_79b9_7f4a_7c15), 1), 0);
        }
    }

    #[test]
    fn keys_spread_evenly_and_move_only_to_a_new_shard() {
        let keys: Vec<u64> = (0..40_000u64)
            .map(|k| k.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (k << 7))
            .collect();
        for shards in 1..=16usize {
            let mut counts = vec![0usize; shards];
            for &key in &keys {
                let at = jump_consistent_hash(key, shards);
                counts[at] += 1;
                // Growing by one shard moves a key only onto the new shard.
                let grown = jump_consistent_hash(key, shards + 1);
                assert!(grown == at || grown == shards, "key {key}: {at} -> {grown}");
            }
            let even = keys.len() / shards;
            for (shard, &count) in counts.iter().enumerate() {
                assert!(
                    count.abs_diff(even) * 10 < even,
                    "{shards} shards: shard {shard} holds {count}, expected about {even}"
                );
            }
        }
    }

    #[test]
    fn known_values_stay_put() {
        // Placement is part of the data dir's meaning: these must never change.
        assert_eq!(jump_consistent_hash(0, 2), 0);
        assert_eq!(jump_consistent_hash(1, 2), 0);
        assert_eq!(jump_consistent_hash(0xdead_beef, 16), 5);
        assert_eq!(jump_consistent_hash(12_345_678_901_234_567, 8), 5);
        assert_eq!(jump_consistent_hash((1 << 63) + 5, 4), 3);
        // The key is the id's first 8 bytes, little-endian.
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&0xdead_beef_u64.to_le_bytes());
        assert_eq!(shard_of(&ProcessId(id), 16), 5);
        assert_eq!(shard_of(&ProcessId([7u8; 32]), 1), 0);
    }
}

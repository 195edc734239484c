//! Replica placement: which brokers hold each partition of a new topic, as
//! Kafka's rack-aware assignment does it.
//!
//! The usable brokers are laid out rack by rack in turn (a broker without
//! `broker.rack` counts as one more rack of its own kind, as KRaft's placer
//! treats a missing rack), so neighbours in the list sit on different racks.
//! Partition `p`'s first replica, its preferred leader, is the broker at
//! `start + p`; `start` comes from the topic (random over topics, so the
//! first partitions of many topics do not all land on one broker). Each
//! further replica walks on from there, with a shift that grows after every
//! full turn of the list so that followers vary too, and takes the first
//! broker whose rack the partition does not hold yet; once every rack holds
//! a replica, any broker not yet in the partition.

use std::collections::BTreeMap;

/// A broker that may receive replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub node_id: i32,
    pub rack: Option<String>,
}

/// The replicas of `partitions` partitions, `replication_factor` each, over
/// `brokers` (at least `replication_factor` of them, the caller checks),
/// starting at `start` (any number: it is taken modulo the broker count).
pub fn place(
    brokers: &[Candidate],
    partitions: i32,
    replication_factor: usize,
    start: u64,
) -> Vec<Vec<i32>> {
    let order = rack_alternated(brokers);
    let n = order.len();
    if n == 0 || replication_factor == 0 {
        return vec![Vec::new(); partitions.max(0) as usize];
    }
    let racks = order
        .iter()
        .map(|b| &b.rack)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let start = (start % n as u64) as usize;
    (0..partitions.max(0) as usize)
        .map(|p| {
            let first = (start + p) % n;
            // Followers start further along after every full turn, as
            // Kafka's `nextReplicaShift`.
            let shift = if n > 1 { 1 + (p / n) % (n - 1) } else { 0 };
            let mut replicas = vec![first];
            let mut used_racks = vec![&order[first].rack];
            for step in 0..n {
                if replicas.len() == replication_factor {
                    break;
                }
                let i = (first + shift + step) % n;
                if replicas.contains(&i) {
                    continue;
                }
                if used_racks.len() < racks && used_racks.contains(&&order[i].rack) {
                    continue;
                }
                replicas.push(i);
                used_racks.push(&order[i].rack);
            }
            // Racks ran out before the factor was met: any broker left.
            for step in 0..n {
                if replicas.len() == replication_factor {
                    break;
                }
                let i = (first + shift + step) % n;
                if !replicas.contains(&i) {
                    replicas.push(i);
                }
            }
            replicas.into_iter().map(|i| order[i].node_id).collect()
        })
        .collect()
}

/// The brokers ordered rack after rack: the first of each rack, then the
/// second of each, and so on (racks by name, brokers by id within a rack).
fn rack_alternated(brokers: &[Candidate]) -> Vec<&Candidate> {
    let mut by_rack: BTreeMap<&Option<String>, Vec<&Candidate>> = BTreeMap::new();
    for b in brokers {
        by_rack.entry(&b.rack).or_default().push(b);
    }
    for members in by_rack.values_mut() {
        members.sort_by_key(|b| b.node_id);
    }
    let deepest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    (0..deepest)
        .flat_map(|i| by_rack.values().filter_map(move |m| m.get(i).copied()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};

    fn brokers(spec: &[(i32, Option<&str>)]) -> Vec<Candidate> {
        spec.iter()
            .map(|(id, rack)| Candidate {
                node_id: *id,
                rack: rack.map(str::to_string),
            })
            .collect()
    }

    #[test]
    fn leaders_spread_evenly_and_neighbours_alternate_racks() {
        let b = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
            (5, Some("c")),
            (6, Some("c")),
        ]);
        let placed = place(&b, 12, 1, 0);
        let mut leaders: HashMap<i32, usize> = HashMap::new();
        for r in &placed {
            *leaders.entry(r[0]).or_default() += 1;
        }
        assert!(leaders.values().all(|&c| c == 2), "{leaders:?}");
        // Consecutive partitions' leaders are on different racks.
        let rack = |id: i32| {
            b.iter()
                .find(|c| c.node_id == id)
                .expect("placed on a candidate")
                .rack
                .clone()
        };
        for w in placed.windows(2) {
            assert_ne!(rack(w[0][0]), rack(w[1][0]), "{placed:?}");
        }
    }

    #[test]
    fn replicas_of_a_partition_are_on_distinct_racks_while_racks_last() {
        let b = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("a")),
            (4, Some("b")),
            (5, Some("c")),
        ]);
        for start in 0..5 {
            for replicas in place(&b, 20, 3, start) {
                let racks: BTreeSet<_> = replicas
                    .iter()
                    .map(|id| {
                        b.iter()
                            .find(|c| c.node_id == *id)
                            .expect("placed on a candidate")
                            .rack
                            .clone()
                    })
                    .collect();
                assert_eq!(racks.len(), 3, "{replicas:?}");
            }
        }
        // More replicas than racks: every rack used, then any broker, no repeats.
        for replicas in place(&b, 20, 5, 3) {
            let distinct: BTreeSet<_> = replicas.iter().collect();
            assert_eq!(distinct.len(), 5, "{replicas:?}");
        }
    }

    #[test]
    fn without_racks_it_is_round_robin_from_the_start_with_varying_followers() {
        let b = brokers(&[(1, None), (2, None), (3, None)]);
        let placed = place(&b, 6, 2, 1);
        let leaders: Vec<i32> = placed.iter().map(|r| r[0]).collect();
        assert_eq!(leaders, vec![2, 3, 1, 2, 3, 1]);
        // The second turn shifts the followers.
        assert_ne!(placed[0][1], placed[3][1], "{placed:?}");
        // A broker without a rack beside racked ones is one more rack.
        let mixed = brokers(&[(1, Some("a")), (2, Some("a")), (3, None)]);
        for replicas in place(&mixed, 6, 2, 0) {
            assert!(replicas.contains(&3), "{replicas:?}");
        }
    }
}

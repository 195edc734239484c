//! Newtypes for the two integers of the data path that are easiest to mix up
//! with each other and with counts: a log offset and a leader epoch.

use std::fmt;

/// A position in a partition's log: the offset of a record, or one past the
/// last one (a log end offset, a high watermark).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub i64);

impl Offset {
    /// Kafka's -1: not known yet (a follower that has not fetched).
    pub const UNKNOWN: Offset = Offset(-1);

    pub fn is_known(self) -> bool {
        self.0 >= 0
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A partition's leader epoch (KIP-101, KIP-320): bumped by the controller
/// at each leader change and stamped in every batch the leader appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LeaderEpoch(pub i32);

impl LeaderEpoch {
    /// Kafka's -1: no epoch given (old clients) or none known.
    pub const UNKNOWN: LeaderEpoch = LeaderEpoch(-1);
}

impl fmt::Display for LeaderEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

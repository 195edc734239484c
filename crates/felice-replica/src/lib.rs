//! felice-replica: the state of a replicated partition.
//!
//! Owns [`state::PartitionState`], the leader's bookkeeping as Kafka's
//! `Partition` and `Replica` keep it: each follower's log end offset and
//! caught-up time, the high watermark, the in-sync replica set (ISR) with at
//! most one change in flight to the controller, and when an acks=all produce
//! may complete. Pure: no I/O, no clock, no locks; events come in as method
//! calls with `now_ms`, what must happen comes out as [`state::Effects`].
//!
//! The partition's log, the purgatories and the follower fetcher still live
//! in felice-broker (`replica.rs`); they move here as replication lands (see
//! docs/replication-plan.md).

pub mod state;

pub use felice_wire::{LeaderEpoch, Offset};
pub use state::{
    BrokerId, Completion, Effects, IsrProposal, LeaderAndIsr, PartitionState, ReplicationConfig,
    StateError,
};

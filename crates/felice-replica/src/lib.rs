//! felice-replica: the state of a replicated partition.
//!
//! Owns [`state::PartitionState`], the leader's bookkeeping as Kafka's
//! `Partition` and `Replica` keep it: each follower's log end offset and
//! caught-up time, the high watermark, the in-sync replica set (ISR) with at
//! most one change in flight to the controller, and when an acks=all produce
//! may complete. Pure: no I/O, no clock, no locks; events come in as method
//! calls with `now_ms`, what must happen comes out as [`state::Effects`].
//!
//! Also [`partition`]: the hosted partitions ([`partition::ReplicaManager`],
//! [`partition::Partition`]), each owning its log and the long-poll
//! purgatory; [`clock`], the injected wall clock; [`TopicSettings`], what a
//! partition acts on. The follower fetcher and the acks=all purgatory come
//! here as replication lands (see docs/replication-plan.md).

pub mod clock;
pub mod hw_checkpoint;
pub mod limits;
pub mod partition;
pub mod settings;
pub mod state;

pub use settings::TopicSettings;

pub use felice_wire::{LeaderEpoch, Offset};
pub use state::{
    BrokerId, Completion, Effects, IsrProposal, LeaderAndIsr, PartitionState, ReplicationConfig,
    StateError,
};

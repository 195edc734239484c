//! Cluster metadata, KRaft-style: every cluster fact (brokers, topics, topic ids,
//! partitions, leaders, ISR, topic configs) is a [`MetadataRecord`] committed to
//! a Raft-replicated log (batches of records, one per controller decision) and
//! applied, in log order, to an immutable [`MetadataImage`] that request
//! handlers read through an `Arc` snapshot.
//!
//! Invariants:
//! - The image is a pure function of the records applied so far: replaying the
//!   log from the start yields the same image (that is what start-up does).
//! - A record is applied to the image only after it is committed (durable on a
//!   majority of the voters), so no handler ever sees a fact that a crash
//!   could take back.
//!
//! [`MetadataQuorum::commit`] is the single place where records enter the
//! log; [`raft`] holds the storage, state machine and messages under it.
//! [`MetadataLog`] is the single-file log of the releases before Raft, read
//! once to migrate an old data folder.

mod codec;
mod image;
mod log;
pub mod observer;
pub mod quorum;
pub mod raft;
mod records;

pub use image::{BrokerImage, MetadataImage, PartitionImage, TopicImage};
pub use log::{MetadataLog, MetadataLogError};
pub use observer::MetadataObserver;
pub use quorum::{CommitError, MetadataQuorum, QuorumConfig, QuorumError, SnapshotSettings};
pub use records::{MetadataRecord, NodeId, TopicId};

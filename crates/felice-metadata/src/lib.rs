//! Cluster metadata, KRaft-style: every cluster fact (brokers, topics, topic ids,
//! partitions, leaders, ISR, topic configs) is a [`MetadataRecord`] appended to
//! an append-only [`MetadataLog`] and applied, in log order, to an immutable
//! [`MetadataImage`] that request handlers read through an `Arc` snapshot.
//!
//! Invariants:
//! - The image is a pure function of the records applied so far: replaying the
//!   log from the start yields the same image (that is what start-up does).
//! - A record is applied to the image only after it is durable in the log
//!   (appended and fsynced), so no handler ever sees a fact that a crash could
//!   take back.
//!
//! The seam for replication: [`MetadataStore::commit`] is the single place
//! where records enter the log. A Raft-replicated log (a later issue) replaces
//! the local file behind it; the image and its readers stay unchanged.

mod codec;
mod image;
mod log;
pub mod raft;
mod records;
mod store;

pub use image::{BrokerImage, MetadataImage, PartitionImage, TopicImage};
pub use log::{MetadataLog, MetadataLogError};
pub use records::{MetadataRecord, NodeId, TopicId};
pub use store::{CommitError, MetadataStore};

//! The metadata log replicated with Raft ([openraft] 0.9): the types that
//! configure it, the durable log store ([`FileLogStore`]) and the state
//! machine that applies committed entries to the [`MetadataImage`]
//! ([`MetadataStateMachine`]).
//!
//! One Raft entry carries one [`MetadataBatch`]: the records of one
//! controller decision (a topic with its partitions, a broker registration),
//! applied atomically, as KRaft's record batches are. The image's `offset`
//! is the index of the last applied entry.
//!
//! Durability: the vote and every log entry are fsynced before openraft is
//! told they are stored (Raft's safety depends on it); snapshots are
//! fsynced before they replace the previous one.
//!
//! [openraft]: https://docs.rs/openraft/0.9

#[cfg(test)]
mod cluster_tests;
pub mod fetch;
mod log_store;
pub mod network;
mod state_machine;
#[cfg(test)]
mod tests;

pub use log_store::FileLogStore;
pub use state_machine::{Meta as SnapshotMeta, MetadataStateMachine};

use crate::codec;
use crate::records::MetadataRecord;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

openraft::declare_raft_types!(
    /// The Raft type configuration of the metadata quorum.
    pub MetaRaft:
        D = MetadataBatch,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<MetaRaft>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type LogId = openraft::LogId<u64>;
/// A running Raft node of the metadata quorum.
pub type RaftNode = openraft::Raft<MetaRaft>;
pub use openraft::BasicNode;
pub type StorageError = openraft::StorageError<u64>;

/// The records of one controller decision, applied together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataBatch(pub Vec<MetadataRecord>);

/// What applying an entry answers the proposer: the metadata offset (Raft
/// index) at which its records are in the image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub offset: u64,
}

/// Records as `[length u32][record]` frames, the encoding of a batch and of
/// a snapshot.
pub(crate) fn encode_records(records: &[MetadataRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut one = Vec::new();
    for r in records {
        one.clear();
        codec::encode(r, &mut one);
        out.extend_from_slice(&(one.len() as u32).to_be_bytes());
        out.extend_from_slice(&one);
    }
    out
}

pub(crate) fn decode_records(mut buf: &[u8]) -> Result<Vec<MetadataRecord>, String> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let len = buf
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or("truncated record length")?;
        let body = buf.get(4..4 + len).ok_or("truncated record")?;
        out.push(codec::decode(body).map_err(|e| e.to_string())?);
        buf = &buf[4 + len..];
    }
    Ok(out)
}

impl Serialize for MetadataBatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&encode_records(&self.0))
    }
}

impl<'de> Deserialize<'de> for MetadataBatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MetadataBatch, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("encoded metadata records")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        let bytes = d.deserialize_bytes(Bytes)?;
        decode_records(&bytes)
            .map(MetadataBatch)
            .map_err(serde::de::Error::custom)
    }
}

/// An I/O failure as openraft's storage error, naming what failed.
pub(crate) fn io_error(
    subject: openraft::ErrorSubject<u64>,
    verb: openraft::ErrorVerb,
    e: impl std::fmt::Display,
) -> StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}

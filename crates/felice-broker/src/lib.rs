//! The Felice broker: network layer, request dispatch, one handler module per
//! Kafka API, the replica manager over the partition logs, and the controller
//! logic that turns admin requests into metadata records.

pub mod broker;
pub(crate) mod broker_lifecycle;
pub use felice_replica::clock;
pub mod config;
pub(crate) mod controller;
pub(crate) mod controller_channel;
pub(crate) mod controller_net;
pub(crate) mod coordinator;
pub mod dispatch;
pub mod handlers;
pub mod limits;
pub(crate) mod metadata_fetch;
pub(crate) mod metadata_source;
pub(crate) mod net;
pub(crate) mod offline_replicas;
pub(crate) mod placement;
pub(crate) mod producer_ids;
pub(crate) mod publisher;
pub(crate) mod raft_transport;
pub(crate) mod replica_fetcher;
pub(crate) use felice_replica::partition as replica;
#[cfg(test)]
mod replica_fetch_tests;
pub(crate) mod response;
pub mod server;
pub(crate) mod topic_config;

pub use broker::Broker;
pub use config::BrokerConfig;

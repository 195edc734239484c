//! The Felice broker: network layer, request dispatch, one handler module per
//! Kafka API, the replica manager over the partition logs, and the controller
//! logic that turns admin requests into metadata records.

pub mod broker;
pub mod config;
pub mod controller;
pub mod coordinator;
pub mod dispatch;
pub mod handlers;
pub mod limits;
pub mod net;
pub mod producer_ids;
pub mod publisher;
pub mod replica;
pub mod response;
pub mod server;
pub mod topic_config;

pub use broker::Broker;
pub use config::BrokerConfig;

//! Coordinators' pure logic, no I/O: the classic consumer-group state
//! machine ([`group`]) and the record format of `__consumer_offsets`
//! ([`records`]). The broker's `coordinator` module is the thin shell that
//! parks requests, writes records to the log and runs the timers.

pub mod group;
pub mod records;

pub use group::{Effect, Group, GroupConfig, GroupError, GroupState, RequestId};

//! Bounds on everything that grows, in one place, with why and what they cost.
//! Limits that Kafka makes configurable live in [`crate::config`] under
//! Kafka's names (`socket.request.max.bytes`, `max.connections`,
//! `connections.max.idle.ms`, `message.max.bytes`, `fetch.max.bytes`).

/// Smallest valid request frame: api key (2) + api version (2) + correlation
/// id (4) + client id length (2). Anything shorter is garbage.
pub const MIN_REQUEST_FRAME_BYTES: usize = 10;

/// Buffered reader capacity per connection. Costs this much memory per open
/// connection; 16 KiB keeps 10,000 idle connections under 160 MiB of buffers
/// while letting a pipelining client's small requests arrive in one read.
pub const CONNECTION_READ_BUFFER_BYTES: usize = 16 * 1024;

/// Request frame bytes allocated before any body byte arrives when no
/// request memory pool (`queued.max.request.bytes`) budgets frames; with the
/// pool, the whole frame is allocated at once, since the pool already counts
/// it. A frame up to this size is read without reallocating; a larger one
/// reserves the rest once this much has been received (the doubling growth
/// it replaces was 14% of the broker's instructions in a 256 KiB-batch
/// produce profile). Worst case per connection that announces a large frame
/// and stalls: 1 MiB.
pub const FRAME_PREALLOC_BYTES: usize = 1024 * 1024;

/// Bytes of fetched records held in broker memory at once, over all fetch
/// responses being built or written. Ranges of `ZERO_COPY_MIN_BYTES` or more
/// never count (they go out with `sendfile`); a smaller range is read into
/// memory only while this budget has room, and otherwise goes out with
/// `sendfile` too, which costs no memory. So fetch responses' records hold
/// at most 64 MiB whatever the number of connections and partitions (before,
/// each response could hold up to `fetch.max.bytes` of small ranges).
pub const FETCH_MEMORY_BUDGET_BYTES: usize = 64 << 20;

/// The inline-append switch of the partitions (see felice-replica's limits).
pub use felice_replica::limits::{INLINE_APPEND_PAUSE_MS, SLOW_INLINE_APPEND};

/// Longest a Fetch may park in purgatory, whatever `max_wait_ms` it asks for
/// (Kafka clients use 500 ms by default; librdkafka up to `fetch.wait.max.ms`).
pub const MAX_FETCH_WAIT_MS: u64 = 30_000;

/// Most partitions one topic may have: each costs a directory, an open file
/// and ~3 KiB of memory on every replica.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 100_000;

/// Most partitions one CreateTopics or Metadata auto-creation may create in
/// one request, so one request cannot stall the metadata log for long.
pub const MAX_PARTITIONS_PER_CREATE_REQUEST: i64 = 100_000;

const _: () = assert!(MAX_PARTITIONS_PER_TOPIC as i64 <= MAX_PARTITIONS_PER_CREATE_REQUEST);

const _: () = assert!(MIN_REQUEST_FRAME_BYTES < CONNECTION_READ_BUFFER_BYTES);

/// Idempotent producer ids remembered by all partitions of this broker
/// together (Kafka has no bound). Each costs ~300 bytes in each partition it
/// wrote to (293 measured), so 1,000,000 is ~300 MB at worst. Past it, a partition taking a
/// new producer id evicts its own least recently written producer (which
/// loses only its duplicate detection); the per-partition bound is
/// [`felice_log::MAX_PRODUCERS_PER_PARTITION`] (10,000). A client cycling
/// through new ids therefore cannot grow the broker's memory without bound.
pub const MAX_PRODUCER_IDS_PER_BROKER: usize = 1_000_000;
const _: () = assert!(MAX_PRODUCER_IDS_PER_BROKER >= felice_log::MAX_PRODUCERS_PER_PARTITION);

/// Longest a request that changed metadata itself (CreateTopics' timeout is
/// capped by it, Metadata auto-creation, the creation of `__consumer_offsets`)
/// waits for this broker to apply the image containing its change. Applying
/// opens or deletes partition logs, milliseconds each; the wait costs one
/// parked task (async) or one blocking thread, and is woken, never polled.
pub const MAX_METADATA_APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Connections the controller listener accepts at once: every other node of
/// a cluster opens one (Raft, and a broker's calls to the controller), so
/// this bounds the cluster's size far above any we run, at ~20 KiB each.
pub const MAX_CONTROLLER_CONNECTIONS: usize = 1024;

/// Longest a broker tries to reach the active controller for one request
/// (over leader changes and dropped connections) before it answers the
/// client REQUEST_TIMED_OUT: a few election timeouts.
pub const MAX_CONTROLLER_CALL: std::time::Duration = std::time::Duration::from_secs(30);

/// How long an admin request with no timeout (`timeout_ms <= 0`) still waits
/// for this broker to apply its change, so that the client's next request
/// here sees it; past it the answer goes out anyway, without an error.
pub const LOCAL_APPLY_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Most brokers one cluster registers: each costs a few hundred bytes in
/// every node's metadata image and a heartbeat every few seconds on the
/// active controller. A registration of a new node id past it is refused
/// (INVALID_REGISTRATION); a registered node may always register again.
pub const MAX_BROKERS: usize = 1_000;
const _: () = assert!(MAX_BROKERS < MAX_CONTROLLER_CONNECTIONS);

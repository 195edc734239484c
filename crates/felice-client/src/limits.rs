//! Every bound the client keeps, in one place, with why and what it costs.

/// Largest response frame we accept. Kafka's default `fetch.max.bytes` is 50 MiB; a
/// response carries that plus a little framing. A bigger length prefix is a protocol
/// error, checked before allocating. Cost: one buffer of this size at worst per connection.
pub const MAX_RESPONSE_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Requests in flight on one connection (sent, response not yet read). Writers wait for
/// a slot when it is full, which is the backpressure. Kafka's own default is 5 per
/// connection for producers; tools that pipeline harder still stay bounded. Cost: one
/// small pending entry each (the responses themselves are bounded by the frame limit).
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 128;

/// Minimum read buffer growth: big enough that a read syscall picks up many small
/// responses at once. Cost: 64 KiB per connection.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Client id sent in every request header.
pub const CLIENT_ID: &str = "felice-client";

const _: () = assert!(MAX_RESPONSE_FRAME_BYTES > READ_BUFFER_BYTES);
const _: () = assert!(MAX_IN_FLIGHT_PER_CONNECTION >= 5);

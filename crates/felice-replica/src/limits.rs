//! The bounds this crate keeps (felice-broker's `limits.rs` lists them with
//! the broker's own).

/// An append on a connection's task (`Partition::try_append_now`) that
/// takes this long means the kernel is making writers wait (dirty-page
/// throttling, a busy journal): appends then go to blocking threads for
/// [`INLINE_APPEND_PAUSE_MS`], so the two runtime workers keep serving
/// fetches, heartbeats and other connections. At most one such stall per
/// pause reaches a worker.
pub const SLOW_INLINE_APPEND: std::time::Duration = std::time::Duration::from_millis(5);

/// See [`SLOW_INLINE_APPEND`].
pub const INLINE_APPEND_PAUSE_MS: i64 = 1_000;

//! The high watermarks of a log directory's partitions, in Kafka's
//! `replication-offset-checkpoint` file:
//!
//! ```text
//! 0            (version)
//! 2            (entry count)
//! orders 0 1500
//! orders 1 1320
//! ```
//!
//! Written every `replica.high.watermark.checkpoint.interval.ms` and at
//! shutdown; read once when the broker starts, so a partition reopens with
//! the high watermark it had, not its log end offset (which may hold
//! records no follower confirmed: exposing them would let a consumer read
//! what a failover then loses). A missing or unreadable file counts as
//! empty: partitions start at their log start offset and the leader moves
//! the high watermark up again.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

pub const FILE: &str = "replication-offset-checkpoint";

/// (topic, partition) → high watermark.
pub type HighWatermarks = HashMap<(String, i32), i64>;

/// Reads `dir`'s checkpoint; anything unreadable is empty (and logged).
pub fn read(dir: &Path) -> HighWatermarks {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "high-watermark checkpoint unreadable");
            return HashMap::new();
        }
    };
    parse(&text).unwrap_or_else(|| {
        tracing::warn!(path = %path.display(), "high-watermark checkpoint malformed; ignored");
        HashMap::new()
    })
}

fn parse(text: &str) -> Option<HighWatermarks> {
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut out = HashMap::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let line = lines.next()?;
        // Topic names have no spaces (Kafka's legal characters).
        let mut parts = line.split(' ');
        let topic = parts.next()?.to_string();
        let partition: i32 = parts.next()?.parse().ok()?;
        let offset: i64 = parts.next()?.parse().ok()?;
        if parts.next().is_some() || topic.is_empty() || partition < 0 || offset < 0 {
            return None;
        }
        out.insert((topic, partition), offset);
    }
    if lines.any(|l| !l.trim().is_empty()) {
        return None;
    }
    Some(out)
}

/// Writes `entries` as `dir`'s checkpoint: a temporary file, fsynced,
/// renamed over the old one, then the directory fsynced (Kafka's
/// `CheckpointFile`).
pub fn write(dir: &Path, entries: &[(String, i32, i64)]) -> std::io::Result<()> {
    let mut text = format!("0\n{}\n", entries.len());
    for (topic, partition, offset) in entries {
        text.push_str(&format!("{topic} {partition} {offset}\n"));
    }
    let path = dir.join(FILE);
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_kafkas_format_and_ignores_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read(dir.path()).is_empty(), "missing is empty");
        let entries = vec![
            ("orders".to_string(), 0, 1500),
            ("a.b-c_d".to_string(), 7, 0),
        ];
        write(dir.path(), &entries).expect("write");
        let text = std::fs::read_to_string(dir.path().join(FILE)).expect("read");
        assert_eq!(text, "0\n2\norders 0 1500\na.b-c_d 7 0\n");
        let back = read(dir.path());
        assert_eq!(back.len(), 2);
        assert_eq!(back[&("orders".to_string(), 0)], 1500);
        for bad in [
            "1\n0\n",
            "0\n2\nt 0 1\n",
            "0\n1\nt x 1\n",
            "0\n1\nt 0 -5\n",
            "0\n1\nt 0 1 9\n",
        ] {
            std::fs::write(dir.path().join(FILE), bad).expect("write");
            assert!(read(dir.path()).is_empty(), "{bad:?}");
        }
    }
}

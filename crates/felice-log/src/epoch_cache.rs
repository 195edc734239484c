//! The leader-epoch cache of a partition: for each leader epoch, the first
//! offset written in it, kept in Kafka's `leader-epoch-checkpoint` format
//!
//! ```text
//! 0            (version)
//! 2            (entry count)
//! 0 0          (epoch, start offset)
//! 3 1500
//! ```
//!
//! What a replica that comes back asks of its leader (OffsetForLeaderEpoch,
//! KIP-101/279) is answered from here: [`LeaderEpochCache::end_offset_for`]
//! is Kafka's `LeaderEpochFileCache.endOffsetFor`. Entries only grow with a
//! new epoch; truncation at either end keeps them consistent with the log.
//! `Log` keeps one: it assigns on append, truncates with the log, and
//! brings a stale file up to the batch headers when it opens.

use std::io::Write;
use std::path::Path;

/// The file name Kafka uses in a partition directory.
pub const EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// Kafka's "no epoch" and "no offset" answers.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_OFFSET: i64 = -1;

/// The first offset of one leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// A partition's epochs, ascending in both epoch and start offset. The
/// directory is the caller's (a `Log` keeps one per partition and the path
/// already): the cache holds only its entries.
#[derive(Debug, Default)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// Reads the checkpoint in `dir`; a missing file is an empty cache. A
    /// file that does not parse is an error: the caller rebuilds the cache
    /// from the log's batch headers ([`Self::rebuild`]).
    pub fn open(dir: &Path) -> std::io::Result<LeaderEpochCache> {
        let path = dir.join(EPOCH_CHECKPOINT_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let entries = if text.is_empty() {
            Vec::new()
        } else {
            parse(&text).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is not a leader-epoch checkpoint", path.display()),
                )
            })?
        };
        Ok(LeaderEpochCache { entries })
    }

    /// A cache built from the log's batches, `(partition leader epoch, base
    /// offset)` in log order, replacing whatever the file held.
    pub fn rebuild(batches: impl IntoIterator<Item = (i32, i64)>) -> LeaderEpochCache {
        let mut cache = LeaderEpochCache::default();
        for (epoch, offset) in batches {
            cache.assign(epoch, offset);
        }
        cache
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start_offset`, as Kafka's `assign`:
    /// an epoch not above the latest, or a negative one, changes nothing;
    /// entries it contradicts (an epoch or start offset at or above the new
    /// one) are dropped first. Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        if self.latest().is_some_and(|l| l.epoch >= epoch) {
            return false;
        }
        self.entries
            .retain(|e| e.epoch < epoch && e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Kafka's `endOffsetFor`: the largest epoch at or below `requested`
    /// and the offset where the epoch after it starts (the log end offset
    /// for the latest epoch); `(-1, -1)` when no epoch is above it or none
    /// is known.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        if requested == UNDEFINED_EPOCH {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        }
        match self.latest() {
            None => (UNDEFINED_EPOCH, UNDEFINED_OFFSET),
            Some(l) if l.epoch == requested => (requested, log_end_offset),
            Some(_) => {
                let Some(higher) = self.entries.iter().find(|e| e.epoch > requested) else {
                    return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
                };
                match self.entries.iter().rev().find(|e| e.epoch <= requested) {
                    Some(floor) => (floor.epoch, higher.start_offset),
                    None => (requested, higher.start_offset),
                }
            }
        }
    }

    /// The log was truncated to end at `end_offset`: epochs starting at or
    /// after it are gone.
    pub fn truncate_from_end(&mut self, end_offset: i64) {
        self.entries.retain(|e| e.start_offset < end_offset);
    }

    /// The log now starts at `start_offset` (retention, DeleteRecords): the
    /// epochs wholly before it are gone, and the one it falls in starts there.
    pub fn truncate_from_start(&mut self, start_offset: i64) {
        let Some(floor) = self
            .entries
            .iter()
            .rposition(|e| e.start_offset <= start_offset)
        else {
            return;
        };
        self.entries.drain(..floor);
        if let Some(first) = self.entries.first_mut() {
            first.start_offset = start_offset;
        }
    }

    /// Writes the checkpoint in `dir`: a temporary file renamed over the
    /// old one. Not fsynced: the batch headers are the truth, and a file a
    /// crash left stale, empty or torn is rebuilt from them when the log
    /// opens, so an epoch change costs no disk flush.
    pub fn flush(&self, dir: &Path) -> std::io::Result<()> {
        let path = dir.join(EPOCH_CHECKPOINT_FILE);
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(render(&self.entries).as_bytes())?;
        drop(f);
        std::fs::rename(&tmp, &path)
    }
}

fn render(entries: &[EpochEntry]) -> String {
    let mut out = format!("0\n{}\n", entries.len());
    for e in entries {
        out.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
    }
    out
}

/// Kafka's checkpoint format, version 0; entries must ascend.
fn parse(text: &str) -> Option<Vec<EpochEntry>> {
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut entries: Vec<EpochEntry> = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let mut parts = lines.next()?.split_whitespace();
        let epoch: i32 = parts.next()?.parse().ok()?;
        let start_offset: i64 = parts.next()?.parse().ok()?;
        if parts.next().is_some() || epoch < 0 || start_offset < 0 {
            return None;
        }
        if entries
            .last()
            .is_some_and(|l| l.epoch >= epoch || l.start_offset > start_offset)
        {
            return None;
        }
        entries.push(EpochEntry {
            epoch,
            start_offset,
        });
    }
    if lines.any(|l| !l.trim().is_empty()) {
        return None;
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        LeaderEpochCache::rebuild(entries.iter().copied())
    }

    #[test]
    fn end_offsets_follow_kafkas_rules() {
        // Epochs 0 @0, 2 @100, 5 @250; the log ends at 300.
        let c = cache(&[(0, 0), (0, 10), (2, 100), (2, 150), (5, 250)]);
        assert_eq!(
            c.entries(),
            &[
                EpochEntry {
                    epoch: 0,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 2,
                    start_offset: 100
                },
                EpochEntry {
                    epoch: 5,
                    start_offset: 250
                },
            ]
        );
        assert_eq!(c.end_offset_for(5, 300), (5, 300));
        assert_eq!(c.end_offset_for(2, 300), (2, 250));
        // An epoch this replica never saw: the one below it, up to the next.
        assert_eq!(c.end_offset_for(3, 300), (2, 250));
        assert_eq!(c.end_offset_for(1, 300), (0, 100));
        assert_eq!(c.end_offset_for(6, 300), (-1, -1));
        assert_eq!(c.end_offset_for(-1, 300), (-1, -1));
        let later = cache(&[(3, 40)]);
        assert_eq!(later.end_offset_for(1, 50), (1, 40));
        assert_eq!(cache(&[]).end_offset_for(0, 0), (-1, -1));
    }

    #[test]
    fn assign_drops_contradicted_entries_and_truncation_keeps_it_consistent() {
        let mut c = cache(&[(1, 0), (2, 100), (4, 200)]);
        assert!(
            !c.assign(3, 150),
            "an epoch below the latest changes nothing"
        );
        assert!(c.assign(6, 180), "a new epoch starting inside an old one");
        assert_eq!(
            c.latest(),
            Some(EpochEntry {
                epoch: 6,
                start_offset: 180
            })
        );
        assert_eq!(c.entries().len(), 3);
        c.truncate_from_end(150);
        assert_eq!(
            c.latest(),
            Some(EpochEntry {
                epoch: 2,
                start_offset: 100
            })
        );
        c.truncate_from_start(120);
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 2,
                start_offset: 120
            }]
        );
        c.truncate_from_start(10);
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 2,
                start_offset: 120
            }]
        );
    }

    #[test]
    fn the_checkpoint_round_trips_in_kafkas_format_and_refuses_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = LeaderEpochCache::open(dir.path()).expect("empty");
        assert!(c.entries().is_empty());
        c.assign(0, 0);
        c.assign(3, 1500);
        c.flush(dir.path()).expect("flush");
        let text = std::fs::read_to_string(dir.path().join(EPOCH_CHECKPOINT_FILE)).expect("read");
        assert_eq!(text, "0\n2\n0 0\n3 1500\n");
        let again = LeaderEpochCache::open(dir.path()).expect("reopen");
        assert_eq!(again.entries(), c.entries());
        for bad in [
            "1\n0\n",
            "0\n2\n0 0\n",
            "0\n2\n3 10\n1 20\n",
            "0\n1\n0 x\n",
            "0\n1\n0 0\n9 9\n",
        ] {
            std::fs::write(dir.path().join(EPOCH_CHECKPOINT_FILE), bad).expect("write");
            assert!(LeaderEpochCache::open(dir.path()).is_err(), "{bad:?}");
        }
    }
}

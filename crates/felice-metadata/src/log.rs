//! The local metadata log: one file of frames `[length u32][crc32c u32][record]`.
//!
//! Invariants: every frame before the end of the file is complete and its CRC
//! matches; a torn or corrupt tail (a crash in the middle of an append) is cut
//! off when the log is opened, never applied. Appends are fsynced before
//! [`MetadataLog::append`] returns: metadata changes are rare and must survive
//! a power loss once acknowledged.
//!
//! Not thread-safe by itself: [`crate::MetadataStore`] serialises appends.

use crate::codec;
use crate::records::MetadataRecord;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Largest encoded record accepted (a topic name is at most 249 bytes and a
/// config value is small: this only guards against a corrupt length).
const MAX_RECORD_BYTES: u32 = 1024 * 1024;
const FRAME_HEADER_BYTES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum MetadataLogError {
    #[error("metadata log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct MetadataLog {
    path: PathBuf,
    file: File,
    /// Number of records in the log (the offset of the next record).
    next_offset: u64,
}

impl MetadataLog {
    /// Opens (or creates) the log at `path` and returns it with every record
    /// it holds, in order. A torn tail is truncated away.
    pub fn open(path: &Path) -> Result<(MetadataLog, Vec<MetadataRecord>), MetadataLogError> {
        let io = |source| MetadataLogError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io)?;
        let mut records = Vec::new();
        let mut pos = 0usize;
        while let Some((record, len)) = read_frame(&data[pos..]) {
            records.push(record);
            pos += len;
        }
        if pos != data.len() {
            tracing::warn!(
                path = %path.display(),
                valid_bytes = pos,
                file_bytes = data.len(),
                "metadata log has a torn or corrupt tail; truncating it"
            );
            file.set_len(pos as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        file.seek(SeekFrom::Start(pos as u64)).map_err(io)?;
        let log = MetadataLog {
            path: path.to_path_buf(),
            file,
            next_offset: records.len() as u64,
        };
        Ok((log, records))
    }

    /// Appends `records` as one write and fsyncs. All or nothing: on error the
    /// file is cut back to where it was.
    pub fn append(&mut self, records: &[MetadataRecord]) -> Result<(), MetadataLogError> {
        let io = |source| MetadataLogError::Io {
            path: self.path.clone(),
            source,
        };
        let mut buf = Vec::new();
        let mut payload = Vec::new();
        for record in records {
            payload.clear();
            codec::encode(record, &mut payload);
            buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            buf.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
            buf.extend_from_slice(&payload);
        }
        let start = self.file.stream_position().map_err(io)?;
        let result = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = result {
            // Best effort: leave no partial frame behind for the next append.
            let _ = self.file.set_len(start);
            let _ = self.file.seek(SeekFrom::Start(start));
            return Err(io(e));
        }
        self.next_offset += records.len() as u64;
        Ok(())
    }

    /// The offset the next appended record gets (= records in the log).
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }
}

/// One complete, CRC-valid frame at the start of `data`: the record and the
/// frame's length. `None` at the end of data or at a torn/corrupt frame.
fn read_frame(data: &[u8]) -> Option<(MetadataRecord, usize)> {
    let len = u32::from_be_bytes(data.get(0..4)?.try_into().ok()?);
    if len > MAX_RECORD_BYTES {
        return None;
    }
    let crc = u32::from_be_bytes(data.get(4..8)?.try_into().ok()?);
    let payload = data.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len as usize)?;
    if crc32c::crc32c(payload) != crc {
        return None;
    }
    let record = codec::decode(payload).ok()?;
    Some((record, FRAME_HEADER_BYTES + len as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn reopen_returns_records_and_cuts_a_torn_tail_at_every_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.log");
        let recs: Vec<MetadataRecord> = (0..3)
            .map(|i| MetadataRecord::Topic {
                name: format!("t{i}"),
                topic_id: Uuid::new_v4(),
            })
            .collect();
        {
            let (mut log, got) = MetadataLog::open(&path).expect("open");
            assert!(got.is_empty());
            log.append(&recs[..2]).expect("append");
            log.append(&recs[2..]).expect("append");
        }
        let full = std::fs::read(&path).expect("read");
        let two = {
            let mut b = Vec::new();
            for r in &recs[..2] {
                let mut p = Vec::new();
                codec::encode(r, &mut p);
                b.extend_from_slice(&(p.len() as u32).to_be_bytes());
                b.extend_from_slice(&crc32c::crc32c(&p).to_be_bytes());
                b.extend_from_slice(&p);
            }
            b.len()
        };
        for cut in two..full.len() {
            std::fs::write(&path, &full[..cut]).expect("write");
            let (mut log, got) = MetadataLog::open(&path).expect("open");
            assert_eq!(got, recs[..2].to_vec(), "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).expect("meta").len() as usize, two);
            // Appending after a truncation continues cleanly.
            log.append(&recs[2..]).expect("append");
            drop(log);
            let (_, got) = MetadataLog::open(&path).expect("open");
            assert_eq!(got, recs);
        }
    }
}

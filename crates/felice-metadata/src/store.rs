//! [`MetadataStore`]: the metadata log plus the current image.
//!
//! Concurrency: any thread may call [`MetadataStore::image`] (a cheap `Arc`
//! clone under a read lock held for nanoseconds). [`MetadataStore::commit`]
//! serialises writers on a mutex and does blocking file I/O (an fsync): call
//! it from a blocking thread, not from an async runtime worker.
//!
//! Committing is not applying: every committed image is published on a watch
//! channel ([`MetadataStore::subscribe`]), and whoever keeps state derived from
//! the image (the broker's partitions, the group coordinator) follows that
//! channel at its own pace. A watcher that falls behind sees only the newest
//! image, which is a pure function of the log, so nothing is lost by skipping.

use crate::image::MetadataImage;
use crate::log::{MetadataLog, MetadataLogError};
use crate::records::MetadataRecord;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

pub struct MetadataStore {
    log: Mutex<MetadataLog>,
    /// The newest committed image; its receivers are the appliers.
    image: watch::Sender<Arc<MetadataImage>>,
}

impl MetadataStore {
    /// Opens the log at `path` and replays it into the image.
    pub fn open(path: &Path) -> Result<MetadataStore, MetadataLogError> {
        let (log, records) = MetadataLog::open(path)?;
        let mut image = MetadataImage::default();
        for record in &records {
            image.apply_mut(record);
        }
        Ok(MetadataStore {
            log: Mutex::new(log),
            image: watch::Sender::new(Arc::new(image)),
        })
    }

    /// The newest committed image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// Follows the committed images, starting from the current one (already
    /// marked seen).
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.subscribe()
    }

    /// Validates and commits records atomically with respect to other commits:
    /// `build` sees the current image and returns the records to append (or an
    /// error, which commits nothing). The records are made durable, then
    /// the new image is published to the subscribers and returned. Who needs
    /// the change applied to derived state waits for an applied image with
    /// `offset >= ` the returned image's.
    pub fn commit<E>(
        &self,
        build: impl FnOnce(&MetadataImage) -> Result<Vec<MetadataRecord>, E>,
    ) -> Result<Arc<MetadataImage>, CommitError<E>> {
        let mut log = match self.log.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let current = self.image();
        let records = build(&current).map_err(CommitError::Rejected)?;
        if records.is_empty() {
            return Ok(current);
        }
        log.append(&records).map_err(CommitError::Log)?;
        let mut next = (*current).clone();
        for record in &records {
            next.apply_mut(record);
        }
        let next = Arc::new(next);
        self.image.send_replace(next.clone());
        Ok(next)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError<E> {
    #[error("rejected")]
    Rejected(E),
    #[error(transparent)]
    Log(MetadataLogError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn commits_survive_reopen_and_rejections_write_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta/records.log");
        let id = Uuid::new_v4();
        {
            let store = MetadataStore::open(&path).expect("open");
            store
                .commit::<()>(|_| {
                    Ok(vec![MetadataRecord::Topic {
                        name: "x".into(),
                        topic_id: id,
                    }])
                })
                .expect("commit");
            let r = store.commit(|_| Err::<Vec<MetadataRecord>, _>("no"));
            assert!(matches!(r, Err(CommitError::Rejected("no"))));
        }
        let store = MetadataStore::open(&path).expect("reopen");
        let image = store.image();
        assert_eq!(image.topic("x").map(|t| t.topic_id), Some(id));
        assert_eq!(image.offset, 1);
    }
}

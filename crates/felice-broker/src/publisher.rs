//! The applied metadata image: the newest committed image that this broker's
//! derived state (its partitions and the group coordinator) has caught up
//! with, and the task that brings that state up to each committed image.
//!
//! Committing and applying are separate steps, as in KRaft: the metadata store
//! publishes every committed image on a watch channel; a task of the server
//! follows it, has the broker apply each image ([`crate::Broker::apply`]),
//! which publishes it here. Handlers read only applied images, so they never advertise a
//! partition whose log is not open yet. A handler that made a change itself
//! waits for the applied image containing it ([`AppliedImage::wait_for`]),
//! with a bound: under Raft, committed images arrive when the quorum says so.
//!
//! Invariant: the applied offset never goes down.
//!
//! Concurrency: any thread may read or wait; only the apply path publishes.

use felice_metadata::MetadataImage;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The wait for an applied image ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("metadata not applied within {waited_ms} ms (applied offset: {applied})")]
pub struct ApplyTimedOut {
    /// The offset waited for (`u64::MAX`: a condition on the image).
    pub wanted: u64,
    pub applied: u64,
    pub waited_ms: u128,
}

pub struct AppliedImage {
    image: watch::Sender<Arc<MetadataImage>>,
    /// The applied offset, for waiters on blocking threads.
    offset: Mutex<u64>,
    advanced: Condvar,
}

impl AppliedImage {
    pub fn new(image: Arc<MetadataImage>) -> AppliedImage {
        let offset = image.offset;
        AppliedImage {
            image: watch::Sender::new(image),
            offset: Mutex::new(offset),
            advanced: Condvar::new(),
        }
    }

    pub fn get(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// Every newly applied image, as it is published.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.image.subscribe()
    }

    /// Publishes an image the broker has applied. An older one is ignored.
    pub(crate) fn publish(&self, image: Arc<MetadataImage>) {
        let mut offset = match self.offset.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if image.offset < *offset {
            return;
        }
        *offset = image.offset;
        self.image.send_replace(image);
        self.advanced.notify_all();
    }

    /// Waits until the applied image reaches `offset`; returns that image.
    pub async fn wait_for(
        &self,
        offset: u64,
        timeout: Duration,
    ) -> Result<Arc<MetadataImage>, ApplyTimedOut> {
        self.wait_until(|image| image.offset >= offset, timeout)
            .await
            .map_err(|e| ApplyTimedOut {
                wanted: offset,
                ..e
            })
    }

    /// Waits until an applied image satisfies `done`; returns it.
    pub async fn wait_until(
        &self,
        done: impl Fn(&MetadataImage) -> bool,
        timeout: Duration,
    ) -> Result<Arc<MetadataImage>, ApplyTimedOut> {
        let mut rx = self.image.subscribe();
        let wait = async move {
            rx.wait_for(|image| done(image))
                .await
                .map(|image| image.clone())
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(image)) => Ok(image),
            Ok(Err(_)) | Err(_) => Err(self.timed_out(u64::MAX, timeout)),
        }
    }

    /// [`Self::wait_until`] for blocking threads.
    pub fn wait_until_blocking(
        &self,
        done: impl Fn(&MetadataImage) -> bool,
        timeout: Duration,
    ) -> Result<Arc<MetadataImage>, ApplyTimedOut> {
        let deadline = Instant::now() + timeout;
        let mut applied = match self.offset.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        loop {
            let image = self.get();
            if done(&image) {
                return Ok(image);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(applied);
                return Err(self.timed_out(u64::MAX, timeout));
            }
            applied = match self.advanced.wait_timeout(applied, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// [`Self::wait_for`] for blocking threads.
    pub fn wait_for_blocking(
        &self,
        offset: u64,
        timeout: Duration,
    ) -> Result<Arc<MetadataImage>, ApplyTimedOut> {
        self.wait_until_blocking(|image| image.offset >= offset, timeout)
            .map_err(|e| ApplyTimedOut {
                wanted: offset,
                ..e
            })
    }

    fn timed_out(&self, wanted: u64, timeout: Duration) -> ApplyTimedOut {
        ApplyTimedOut {
            wanted,
            applied: self.get().offset,
            waited_ms: timeout.as_millis(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use felice_metadata::MetadataRecord;

    fn image_at(offset: u64) -> Arc<MetadataImage> {
        let mut image = MetadataImage::default();
        for i in 0..offset {
            image.apply_mut(&MetadataRecord::RegisterBroker {
                node_id: i as i32,
                host: "h".into(),
                port: 1,
                rack: None,
            });
        }
        Arc::new(image)
    }

    #[tokio::test]
    async fn waiters_wake_when_their_offset_is_applied_and_time_out_otherwise() {
        let applied = Arc::new(AppliedImage::new(image_at(1)));
        assert_eq!(
            applied.wait_for(1, Duration::ZERO).await.map(|i| i.offset),
            Ok(1)
        );
        let a = applied.clone();
        let waiter = tokio::spawn(async move { a.wait_for(3, Duration::from_secs(30)).await });
        let a = applied.clone();
        let blocking =
            tokio::task::spawn_blocking(move || a.wait_for_blocking(3, Duration::from_secs(30)));
        applied.publish(image_at(2));
        applied.publish(image_at(3));
        applied.publish(image_at(2)); // older: ignored
        assert_eq!(waiter.await.expect("join").map(|i| i.offset), Ok(3));
        assert_eq!(blocking.await.expect("join").map(|i| i.offset), Ok(3));
        assert_eq!(applied.get().offset, 3);
        let e = applied
            .wait_for(4, Duration::from_millis(1))
            .await
            .expect_err("never applied");
        assert_eq!((e.wanted, e.applied), (4, 3));
        let e = applied
            .wait_for_blocking(4, Duration::from_millis(1))
            .expect_err("never applied");
        assert_eq!((e.wanted, e.applied), (4, 3));
    }
}

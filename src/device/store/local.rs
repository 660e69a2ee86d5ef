//! Certificate records as JSON files under `INFRASTRUCTURE_BASE_DIR`: `current/<device_id>.json`
//! (the device's current record, the one the guard reads) and `certificates/<SERIAL>.json` (the
//! history, one record per certificate, kept until deleted). Names come only from [`DeviceId`]
//! and [`Serial`], whose character sets cannot form a path. Every write goes to a temporary file
//! that is then renamed over the target, so a reader never sees half a file. Changes are
//! compare-and-set under one lock ([`crate::json_file`] writes), which makes them atomic within the process: one process per
//! directory (local development, `sam local`).
//!
//! An install writes the new history record first, then the current record (the commit
//! point: a failure before it leaves nothing accepted and reports the failure), then marks the
//! replaced history record revoked (a failure there is logged: the change has happened).

use std::path::{Path, PathBuf};

use chrono::Utc;
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::Mutex;

use super::{CertificateRecord, CertificateStore, Expect, SUPERSEDED, StoreError, StoreFuture};
use crate::device::id::{DeviceId, Serial};

#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    writes: Mutex<()>,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            writes: Mutex::new(()),
        }
    }

    fn history_path(&self, serial: &Serial) -> PathBuf {
        self.root
            .join("certificates")
            .join(format!("{serial}.json"))
    }

    fn current_path(&self, device: &DeviceId) -> PathBuf {
        self.root.join("current").join(format!("{device}.json"))
    }

    async fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
        crate::json_file::read(path)
            .await
            .map_err(StoreError::Backend)
    }

    async fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
        crate::json_file::write(path, value)
            .await
            .map_err(StoreError::Backend)
    }

    /// Updates a history record after the current record was written (the commit point): a
    /// failure here must not report the change as failed, since it has happened.
    async fn keep_history(path: &Path, record: &CertificateRecord) {
        if let Err(e) = Self::write(path, record).await {
            tracing::warn!(error = %e, serial = %record.serial, "certificate history not updated");
        }
    }

    async fn read_current(
        &self,
        device: &DeviceId,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        Self::read(&self.current_path(device)).await
    }
}

impl CertificateStore for LocalStore {
    fn current<'a>(&'a self, device: &'a DeviceId) -> StoreFuture<'a, Option<CertificateRecord>> {
        Box::pin(self.read_current(device))
    }

    fn install<'a>(
        &'a self,
        record: &'a CertificateRecord,
        expect: Expect<'a>,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let _guard = self.writes.lock().await;
            let replaced = self.read_current(&record.device_id).await?;
            if !expect.holds(replaced.as_ref()) {
                return Ok(false);
            }
            Self::write(&self.history_path(&record.serial), record).await?;
            Self::write(&self.current_path(&record.device_id), record).await?;
            if let Some(mut old) = replaced
                && old.revoke(SUPERSEDED, Utc::now())
            {
                Self::keep_history(&self.history_path(&old.serial), &old).await;
            }
            Ok(true)
        })
    }

    fn revoke_current<'a>(
        &'a self,
        device: &'a DeviceId,
        reason: &'a str,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let _guard = self.writes.lock().await;
            let Some(mut current) = self.read_current(device).await? else {
                return Ok(false);
            };
            if !current.revoke(reason, Utc::now()) {
                return Ok(false);
            }
            Self::write(&self.current_path(device), &current).await?;
            Self::keep_history(&self.history_path(&current.serial), &current).await;
            Ok(true)
        })
    }
}

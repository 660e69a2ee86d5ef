//! Certificate records as JSON files under `INFRASTRUCTURE_BASE_DIR`:
//! `certificates/<SERIAL>.json` (one record per certificate) and `devices/<device_id>.json`
//! (the serials of a device). Names come only from [`DeviceId`] and [`Serial`], whose character
//! sets cannot form a path. Every write goes to a temporary file that is then renamed over the
//! target, so a reader never sees half a file; writes are serialised within the process.

use std::path::{Path, PathBuf};

use chrono::Utc;
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::Mutex;

use super::{CertificateRecord, CertificateStore, StoreError, StoreFuture, newest};
use crate::device::id::{DeviceId, Serial};

#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    writes: Mutex<()>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            writes: Mutex::new(()),
        }
    }

    fn record_path(&self, serial: &Serial) -> PathBuf {
        self.root
            .join("certificates")
            .join(format!("{serial}.json"))
    }

    fn device_path(&self, device: &DeviceId) -> PathBuf {
        self.root.join("devices").join(format!("{device}.json"))
    }

    async fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
        match tokio::fs::read(path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(backend),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    async fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
        let dir = path
            .parent()
            .ok_or_else(|| backend("no parent directory"))?;
        tokio::fs::create_dir_all(dir).await.map_err(backend)?;
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(backend)?;
        let tmp = path.with_extension(format!("tmp-{}", u64::from_le_bytes(suffix)));
        let bytes = serde_json::to_vec_pretty(value).map_err(backend)?;
        tokio::fs::write(&tmp, bytes).await.map_err(backend)?;
        tokio::fs::rename(&tmp, path).await.map_err(backend)
    }

    async fn device_serials(&self, device: &DeviceId) -> Result<Vec<Serial>, StoreError> {
        Ok(Self::read(&self.device_path(device))
            .await?
            .unwrap_or_default())
    }

    async fn device_records(
        &self,
        device: &DeviceId,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        let mut records = Vec::new();
        for serial in self.device_serials(device).await? {
            if let Some(record) = Self::read(&self.record_path(&serial)).await? {
                records.push(record);
            }
        }
        Ok(records)
    }
}

impl CertificateStore for LocalStore {
    fn save<'a>(&'a self, record: &'a CertificateRecord) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let _guard = self.writes.lock().await;
            Self::write(&self.record_path(&record.serial), record).await?;
            let mut serials = self.device_serials(&record.device_id).await?;
            if !serials.contains(&record.serial) {
                serials.push(record.serial.clone());
                Self::write(&self.device_path(&record.device_id), &serials).await?;
            }
            Ok(())
        })
    }

    fn current<'a>(&'a self, device: &'a DeviceId) -> StoreFuture<'a, Option<CertificateRecord>> {
        Box::pin(async move { Ok(newest(self.device_records(device).await?)) })
    }

    fn by_serial<'a>(&'a self, serial: &'a Serial) -> StoreFuture<'a, Option<CertificateRecord>> {
        Box::pin(async move { Self::read(&self.record_path(serial)).await })
    }

    fn revoke_serial<'a>(&'a self, serial: &'a Serial, reason: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let _guard = self.writes.lock().await;
            let Some(mut record) =
                Self::read::<CertificateRecord>(&self.record_path(serial)).await?
            else {
                return Ok(false);
            };
            let changed = record.revoke(reason, Utc::now());
            if changed {
                Self::write(&self.record_path(serial), &record).await?;
            }
            Ok(changed)
        })
    }

    fn revoke_device<'a>(&'a self, device: &'a DeviceId, reason: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let _guard = self.writes.lock().await;
            let mut any = false;
            for mut record in self.device_records(device).await? {
                if record.revoke(reason, Utc::now()) {
                    Self::write(&self.record_path(&record.serial), &record).await?;
                    any = true;
                }
            }
            Ok(any)
        })
    }
}

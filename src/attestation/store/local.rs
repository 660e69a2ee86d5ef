//! Attestation state in one JSON file, `<INFRASTRUCTURE_BASE_DIR>/attestation.json`, read and
//! rewritten ([`crate::json_file`]) under one lock per change: atomic within the process, which
//! is what local work and `sam local` run (one process per directory). Desktop attempt counts
//! stay in memory: a window lasts an hour, and a restart forgetting one loses nothing worth
//! keeping on disk.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex as SyncMutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{AttestationStore, StoreError, StoreFuture};
use crate::attestation::Platform;
use crate::attestation::app_attest::AttestedKey;
use crate::attestation::desktop::Fingerprint;
use crate::attestation::verdict::Verdict;
use crate::device::id::{DeviceId, Serial};

/// The file under the base directory.
pub const FILE: &str = "attestation.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    #[serde(default)]
    keys: BTreeMap<DeviceId, StoredKey>,
    #[serde(default)]
    fingerprints: BTreeMap<DeviceId, Binding>,
    /// By `<device>:<platform>`.
    #[serde(default)]
    verdicts: BTreeMap<String, Verdict>,
    #[serde(default)]
    cleared_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    /// Base64.
    key_id: String,
    /// Base64 of the uncompressed point.
    public_key: String,
    counter: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Binding {
    serial: Serial,
    fingerprint: Fingerprint,
}

fn verdict_key(device: &DeviceId, platform: Platform) -> String {
    format!("{device}:{}", platform.as_str())
}

#[derive(Debug)]
pub struct LocalAttestations {
    path: PathBuf,
    lock: Mutex<()>,
    attempts: SyncMutex<HashMap<(DeviceId, u64), u64>>,
}

impl LocalAttestations {
    pub fn new(base_dir: impl Into<PathBuf>) -> Self {
        Self {
            path: base_dir.into().join(FILE),
            lock: Mutex::new(()),
            attempts: SyncMutex::new(HashMap::new()),
        }
    }

    async fn load(&self) -> Result<State, StoreError> {
        Ok(crate::json_file::read(&self.path)
            .await
            .map_err(StoreError::Backend)?
            .unwrap_or_default())
    }

    /// Reads the state, lets `change` edit it, and writes it back if `change` says so.
    async fn change<T>(
        &self,
        change: impl FnOnce(&mut State) -> (T, bool),
    ) -> Result<T, StoreError> {
        let _guard = self.lock.lock().await;
        let mut state = self.load().await?;
        let (answer, changed) = change(&mut state);
        if changed {
            crate::json_file::write(&self.path, &state)
                .await
                .map_err(StoreError::Backend)?;
        }
        Ok(answer)
    }

    async fn read<T>(&self, read: impl FnOnce(State) -> T) -> Result<T, StoreError> {
        let _guard = self.lock.lock().await;
        Ok(read(self.load().await?))
    }
}

fn decode_key(stored: &StoredKey) -> Result<AttestedKey, StoreError> {
    let broken = |what: &str| StoreError::Backend(format!("{FILE}: a stored key's {what}"));
    let key_id = STANDARD
        .decode(&stored.key_id)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| broken("key_id"))?;
    let public_key = STANDARD
        .decode(&stored.public_key)
        .map_err(|_| broken("public_key"))?;
    Ok(AttestedKey {
        key_id,
        public_key,
        counter: stored.counter,
    })
}

impl AttestationStore for LocalAttestations {
    fn key<'a>(&'a self, device: &'a DeviceId) -> StoreFuture<'a, Option<AttestedKey>> {
        Box::pin(async move {
            self.read(|state| state.keys.get(device).map(decode_key))
                .await?
                .transpose()
        })
    }

    fn put_key<'a>(&'a self, device: &'a DeviceId, key: &'a AttestedKey) -> StoreFuture<'a, ()> {
        Box::pin(self.change(move |state| {
            let stored = StoredKey {
                key_id: STANDARD.encode(key.key_id),
                public_key: STANDARD.encode(&key.public_key),
                counter: key.counter,
            };
            state.keys.insert(device.clone(), stored);
            ((), true)
        }))
    }

    fn advance_counter<'a>(
        &'a self,
        device: &'a DeviceId,
        key_id: &'a [u8; 32],
        counter: u32,
    ) -> StoreFuture<'a, bool> {
        let key_id = STANDARD.encode(key_id);
        Box::pin(self.change(move |state| match state.keys.get_mut(device) {
            Some(stored) if stored.key_id == key_id && stored.counter < counter => {
                stored.counter = counter;
                (true, true)
            }
            _ => (false, false),
        }))
    }

    fn bind_fingerprint<'a>(
        &'a self,
        device: &'a DeviceId,
        serial: &'a Serial,
        fingerprint: &'a Fingerprint,
    ) -> StoreFuture<'a, Fingerprint> {
        Box::pin(
            self.change(move |state| match state.fingerprints.get(device) {
                Some(binding) if &binding.serial == serial => (binding.fingerprint.clone(), false),
                _ => {
                    let binding = Binding {
                        serial: serial.clone(),
                        fingerprint: fingerprint.clone(),
                    };
                    state.fingerprints.insert(device.clone(), binding);
                    (fingerprint.clone(), true)
                }
            }),
        )
    }

    fn count_attempt<'a>(
        &'a self,
        device: &'a DeviceId,
        window: u64,
        _expires_at: u64,
    ) -> StoreFuture<'a, u64> {
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        attempts.retain(|(_, w), _| *w >= window);
        let count = attempts.entry((device.clone(), window)).or_insert(0);
        *count += 1;
        let count = *count;
        Box::pin(async move { Ok(count) })
    }

    fn put_verdict<'a>(
        &'a self,
        device: &'a DeviceId,
        verdict: &'a Verdict,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.change(move |state| {
            let key = verdict_key(device, verdict.platform);
            state.verdicts.insert(key, verdict.clone());
            ((), true)
        }))
    }

    fn verdict<'a>(
        &'a self,
        device: &'a DeviceId,
        platform: Platform,
    ) -> StoreFuture<'a, Option<Verdict>> {
        Box::pin(self.read(move |mut state| state.verdicts.remove(&verdict_key(device, platform))))
    }

    fn clear<'a>(&'a self, at: DateTime<Utc>) -> StoreFuture<'a, ()> {
        Box::pin(self.change(move |state| {
            state.cleared_at = Some(at);
            ((), true)
        }))
    }

    fn cleared_at(&self) -> StoreFuture<'_, Option<DateTime<Utc>>> {
        Box::pin(self.read(|state| state.cleared_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attestation::verdict::{Checks, Status};

    fn device() -> DeviceId {
        DeviceId::parse("desk-00001").unwrap()
    }

    fn temp_dir() -> PathBuf {
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).unwrap();
        std::env::temp_dir().join(format!("attest-local-{}", u64::from_le_bytes(suffix)))
    }

    #[tokio::test]
    async fn state_survives_a_new_store_on_the_same_directory() {
        let dir = temp_dir();
        let store = LocalAttestations::new(&dir);
        let key = AttestedKey {
            key_id: [3; 32],
            public_key: vec![4; 65],
            counter: 0,
        };
        store.put_key(&device(), &key).await.unwrap();
        assert!(store.advance_counter(&device(), &[3; 32], 2).await.unwrap());
        assert!(
            !store.advance_counter(&device(), &[3; 32], 2).await.unwrap(),
            "replayed"
        );
        assert!(
            !store.advance_counter(&device(), &[9; 32], 5).await.unwrap(),
            "other key"
        );
        let verdict = Verdict::new(Platform::Ios, Status::Valid, Checks::default());
        store.put_verdict(&device(), &verdict).await.unwrap();

        let again = LocalAttestations::new(&dir);
        let stored = again.key(&device()).await.unwrap().unwrap();
        assert_eq!(stored.counter, 2);
        assert_eq!(stored.public_key, key.public_key);
        assert_eq!(
            again.verdict(&device(), Platform::Ios).await.unwrap(),
            Some(verdict)
        );
        assert_eq!(
            again.verdict(&device(), Platform::Android).await.unwrap(),
            None
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_fingerprint_is_bound_once_per_certificate() {
        let dir = temp_dir();
        let store = LocalAttestations::new(&dir);
        let first = Fingerprint::parse(&"a".repeat(64)).unwrap();
        let second = Fingerprint::parse(&"b".repeat(64)).unwrap();
        let serial = Serial::parse(&"1".repeat(32)).unwrap();
        let renewed = Serial::parse(&"2".repeat(32)).unwrap();
        let device = device();
        let bound = |s, f| store.bind_fingerprint(&device, s, f);
        assert_eq!(bound(&serial, &first).await.unwrap(), first);
        assert_eq!(bound(&serial, &second).await.unwrap(), first);
        assert_eq!(bound(&renewed, &second).await.unwrap(), second);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

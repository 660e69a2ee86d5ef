//! JSON records in local files, for the stores' local backends (certificates, attestation):
//! a read that tells a missing file from a broken one, and a write that goes to a temporary
//! file renamed over the target, so a reader never sees half a file.

use std::path::Path;

use serde::{Serialize, de::DeserializeOwned};

/// The value in `path`; `None` when the file does not exist. Errors name what failed.
pub async fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    match tokio::fs::read(path).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes `value` to `path` (creating its directory) through a temporary file and a rename.
pub async fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let text = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let dir = path.parent().ok_or_else(|| text(&"no parent directory"))?;
    tokio::fs::create_dir_all(dir).await.map_err(|e| text(&e))?;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| text(&e))?;
    let tmp = path.with_extension(format!("tmp-{}", u64::from_le_bytes(suffix)));
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| text(&e))?;
    tokio::fs::write(&tmp, bytes).await.map_err(|e| text(&e))?;
    tokio::fs::rename(&tmp, path).await.map_err(|e| text(&e))
}

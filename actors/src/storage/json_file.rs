//! Small JSON files of the data directory (the node's identity, its copy of the
//! cluster metadata, a join in progress): read whole, written atomically.
//!
//! A write goes to a temporary file that is fsynced, renamed over the target, and
//! then the directory is fsynced, so after a crash the file holds either the old or
//! the new content, never a mix.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// Reads `dir/name`; `Ok(None)` when it does not exist.
pub fn read<T: DeserializeOwned>(dir: &Path, name: &str) -> Result<Option<T>, String> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|error| format!("{}: {error}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(format!("{}: {error}", path.display())),
    }
}

/// Writes `value` to `dir/name` atomically and durably.
pub fn write<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), String> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|error| error.to_string())?;
    let temporary = dir.join(format!("{name}.tmp"));
    let io = |error: std::io::Error| format!("{}: {error}", temporary.display());
    let mut file = std::fs::File::create(&temporary).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&temporary, dir.join(name)).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|error| format!("{}: {error}", dir.display()))
}

/// Removes `dir/name` if it exists.
pub fn remove(dir: &Path, name: &str) -> Result<(), String> {
    let path = dir.join(name);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(format!("{}: {error}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a value written is read back, a missing file reads as none, and a
    /// damaged file is an error naming it.
    #[test]
    fn round_trip_missing_and_damaged() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read::<Vec<u32>>(dir.path(), "x.json").unwrap(), None);
        write(dir.path(), "x.json", &vec![1u32, 2]).unwrap();
        assert_eq!(
            read::<Vec<u32>>(dir.path(), "x.json").unwrap(),
            Some(vec![1, 2])
        );
        std::fs::write(dir.path().join("x.json"), b"{").unwrap();
        let error = read::<Vec<u32>>(dir.path(), "x.json").unwrap_err();
        assert!(error.contains("x.json"), "{error}");
        remove(dir.path(), "x.json").unwrap();
        remove(dir.path(), "x.json").unwrap();
    }
}

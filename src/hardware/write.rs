//! Atomic file writing: a temp file in the target's directory, then a
//! rename (or a hard link when the target must not be overwritten), so a
//! reader never sees half a file and an interrupted write leaves the old
//! file intact.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::WriteError;

/// Write `contents` to `path` atomically. Without `overwrite`, an existing
/// `path` is an error ([`WriteError::Exists`]) and is never touched.
pub fn write_atomic(path: &Path, contents: &[u8], overwrite: bool) -> Result<(), WriteError> {
    let io = |source: std::io::Error| WriteError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !overwrite && path.exists() {
        return Err(WriteError::Exists {
            path: path.to_path_buf(),
        });
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tmp, mut file) = create_temp(&dir, &file_name).map_err(io)?;
    let result = (|| {
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        if overwrite {
            fs::rename(&tmp, path)
        } else {
            // link(2) fails with EEXIST instead of replacing: no window in
            // which another writer's file could be clobbered. Filesystems
            // without hard links (some FUSE/SMB mounts) fall back to a
            // check-then-rename, which has that window but is still atomic
            // for readers.
            match fs::hard_link(&tmp, path) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    if path.exists() {
                        Err(std::io::ErrorKind::AlreadyExists.into())
                    } else {
                        fs::rename(&tmp, path)
                    }
                }
                other => other,
            }
        }
    })();
    let _ = fs::remove_file(&tmp);
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(WriteError::Exists {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(io(e)),
    }
}

fn create_temp(dir: &Path, file_name: &str) -> std::io::Result<(PathBuf, fs::File)> {
    let pid = std::process::id();
    for attempt in 0..100u32 {
        let tmp = dir.join(format!(".{file_name}.{pid}.{attempt}.tmp"));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "no free temporary file name in the target directory",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hw.toml");
        write_atomic(&p, b"first", false).unwrap();
        let err = write_atomic(&p, b"second", false).unwrap_err();
        assert!(matches!(err, WriteError::Exists { .. }), "{err}");
        assert_eq!(fs::read(&p).unwrap(), b"first");
        write_atomic(&p, b"third", true).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"third");
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn missing_directory_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no/such/dir/hw.toml");
        let err = write_atomic(&p, b"x", false).unwrap_err();
        assert!(matches!(err, WriteError::Io { .. }), "{err}");
    }
}

//! Atomic file writing: a temp file in the target's directory, then a
//! rename (or a hard link when the target must not be overwritten), so a
//! reader never sees half a file and an interrupted write leaves the old
//! file intact.

use std::path::Path;

use crate::fsutil::{self, Mode};

use super::error::WriteError;

/// Write `contents` to `path` atomically ([`crate::fsutil`]). Without
/// `overwrite`, an existing `path` is an error ([`WriteError::Exists`]) and
/// is never touched.
pub fn write_atomic(path: &Path, contents: &[u8], overwrite: bool) -> Result<(), WriteError> {
    let mode = if overwrite {
        Mode::Replace
    } else {
        Mode::CreateNew
    };
    fsutil::write_atomic(path, contents, mode).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            WriteError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            WriteError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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

//! Writing files without losing anything: one atomic writer for every file
//! ggplan produces (hardware files, profiles, updated configs).
//!
//! The new bytes go to a temporary file in the *same directory* (so the
//! rename cannot cross file systems), are flushed with `fsync`, get the old
//! file's permission bits, and then replace the target with one `rename`,
//! which POSIX makes atomic; the directory is fsynced so the rename itself
//! survives a crash. A symlink is followed: the file it points to is
//! replaced, the link stays. With [`Mode::CreateNew`] the file is put in
//! place with `link(2)`, which fails instead of replacing, so an existing
//! file is never clobbered — not even by a writer racing us.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What to do when the target exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Replace it (keeping its permission bits).
    Replace,
    /// Fail with `io::ErrorKind::AlreadyExists` and leave it untouched.
    CreateNew,
}

/// Write `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Mode) -> io::Result<()> {
    let target = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => path.to_path_buf(),
        Err(e) => return Err(e),
    };
    let old_perms = match fs::metadata(&target) {
        Ok(_) if mode == Mode::CreateNew => return Err(io::ErrorKind::AlreadyExists.into()),
        Ok(m) => Some(m.permissions()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;

    let (tmp_path, mut tmp) = create_temp(&dir, &name.to_string_lossy())?;
    let result = (|| {
        tmp.write_all(bytes)?;
        if let Some(p) = old_perms {
            tmp.set_permissions(p)?;
        }
        tmp.sync_all()?;
        drop(tmp);
        match mode {
            Mode::Replace => fs::rename(&tmp_path, &target)?,
            // link(2) fails with EEXIST instead of replacing. File systems
            // without hard links fall back to check-then-rename.
            Mode::CreateNew => match fs::hard_link(&tmp_path, &target) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    if target.exists() {
                        return Err(io::ErrorKind::AlreadyExists.into());
                    }
                    fs::rename(&tmp_path, &target)?
                }
                other => other?,
            },
        }
        // Persist the rename. Some file systems refuse fsync on a
        // directory; the data itself is already safe by then.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    // After a rename this is a no-op; after a hard link or a failure it
    // removes the temporary name.
    let _ = fs::remove_file(&tmp_path);
    result
}

/// A new, exclusive temp file next to the target: `.NAME.ggplan-PID-N.tmp`.
fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    for n in 0..100u32 {
        let p = dir.join(format!(".{name}.ggplan-{pid}-{n}.tmp"));
        match OpenOptions::new().write(true).create_new(true).open(&p) {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free temporary file name",
    ))
}

/// A TOML basic string with the escapes the spec requires (`"`, `\\`,
/// U+0000–U+001F and U+007F), for the TOML files ggplan writes by hand to
/// keep their layout (profiles, detected hardware files).
pub fn toml_string(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn create_new_never_clobbers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hw.toml");
        write_atomic(&p, b"first", Mode::CreateNew).unwrap();
        let err = write_atomic(&p, b"second", Mode::CreateNew).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"first");
        write_atomic(&p, b"third", Mode::Replace).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"third");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn replace_keeps_permissions_and_follows_symlinks() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.conf");
        fs::write(&real, "old").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("link.conf");
        symlink(&real, &link).unwrap();
        write_atomic(&link, b"new", Mode::Replace).unwrap();
        assert_eq!(fs::read(&real).unwrap(), b"new");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::metadata(&real).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn missing_directory_is_an_error_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no/such/dir/x.toml");
        assert!(write_atomic(&p, b"x", Mode::Replace).is_err());
        assert!(!p.exists());
    }
}

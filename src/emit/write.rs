//! Writing an updated config file safely, and showing what would change.
//!
//! [`write_atomic`] never leaves a half-written file: the new bytes go to a
//! temporary file in the *same directory* (so the rename cannot cross file
//! systems), are flushed with `fsync`, get the old file's permission bits,
//! and then replace the file with one `rename`, which POSIX makes atomic.
//! The directory is fsynced afterwards so the rename itself survives a
//! crash. A symlink is followed: the file it points to is replaced, the
//! link stays. Ownership is not changed (a process can only create files it
//! owns); a file owned by another user keeps its permission bits but becomes
//! ours, which is why ggplan reports the path it wrote.
//!
//! [`unified_diff`] is what `--dry-run` prints, via the `similar` crate
//! (already in the dependency tree through insta, by insta's author, with
//! no dependencies of its own in the default features).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Replace `path` with `bytes` atomically, keeping its permissions; create
/// it (mode from the umask) if it does not exist.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let target = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => path.to_path_buf(),
        Err(e) => return Err(e),
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let old_perms = match fs::metadata(&target) {
        Ok(m) => Some(m.permissions()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };

    let (tmp_path, mut tmp) = create_temp(&dir, &name.to_string_lossy())?;
    let result = (|| {
        tmp.write_all(bytes)?;
        if let Some(p) = old_perms {
            tmp.set_permissions(p)?;
        }
        tmp.sync_all()?;
        drop(tmp);
        fs::rename(&tmp_path, &target)?;
        // Persist the rename. Some file systems refuse fsync on a
        // directory; the data itself is already safe by then.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
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

/// A unified diff (3 lines of context) from `old` to `new`, with `path` in
/// the `---`/`+++` headers; empty if they are equal.
pub fn unified_diff(path: &str, old: &str, new: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_only_the_changed_lines() {
        let d = unified_diff("m.conf", "[a]\nK=1\n[b]\nK=2\n", "[a]\nK=1\n[b]\nK=3\n");
        insta::assert_snapshot!(d, @r"
        --- a/m.conf
        +++ b/m.conf
        @@ -1,4 +1,4 @@
         [a]
         K=1
         [b]
        -K=2
        +K=3
        ");
        assert_eq!(unified_diff("x", "same", "same"), "");
    }

    #[cfg(unix)]
    #[test]
    fn atomic_write_keeps_permissions_and_follows_symlinks() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("models.conf");
        fs::write(&real, "old").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).unwrap();
        let link = dir.path().join("link.conf");
        symlink(&real, &link).unwrap();

        write_atomic(&link, b"new").unwrap();
        assert_eq!(fs::read_to_string(&real).unwrap(), "new");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::metadata(&real).unwrap().permissions().mode() & 0o777,
            0o640
        );
        // No temp file left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        let fresh = dir.path().join("sub-new.yaml");
        write_atomic(&fresh, b"x").unwrap();
        assert_eq!(fs::read(&fresh).unwrap(), b"x");
    }
}

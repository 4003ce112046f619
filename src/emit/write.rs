//! Writing an updated config file safely, and showing what would change.
//!
//! [`write_atomic`] is the shared atomic writer ([`crate::fsutil`]):
//! temp file in the same directory, fsync, keep permissions, rename.
//!
//! [`unified_diff`] is what `--dry-run` prints, via the `similar` crate
//! (already in the dependency tree through insta, by insta's author, with
//! no dependencies of its own in the default features).

use std::io;
use std::path::Path;

/// Replace `path` with `bytes` atomically, keeping its permissions; create
/// it (mode from the umask) if it does not exist. See [`crate::fsutil`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::fsutil::write_atomic(path, bytes, crate::fsutil::Mode::Replace)
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
}

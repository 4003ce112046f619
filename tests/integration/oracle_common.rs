//! Shared by the tests that read the oracle fixtures
//! (`tests/fixtures/oracle/<model>/<case>.json`).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub fn oracle_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oracle")
}

/// Every fixture, sorted by model then case, parsed as `T` (each test keeps
/// only the fields it checks). The `models/` folder holds profiles, not cases.
pub fn load_fixtures<T: DeserializeOwned>() -> Vec<(PathBuf, T)> {
    let mut out = Vec::new();
    let Ok(models) = std::fs::read_dir(oracle_root()) else {
        return out;
    };
    let mut dirs: Vec<PathBuf> = models
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n != "models"))
        .collect();
    dirs.sort();
    for dir in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let fx: T = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not a schema-1 fixture: {e}", f.display()));
            out.push((f, fx));
        }
    }
    out
}

//! Multi-file (split) models: `NAME-00001-of-00005.gguf`.
//!
//! llama.cpp's `gguf-split` writes one header per shard; the first carries
//! the model metadata and every shard carries `split.no`, `split.count` and
//! (in the first) `split.tensors.count`. Given any shard we find every
//! sibling by name (`llama_split_path`/`llama_split_prefix` in llama.cpp),
//! read each header, check the split keys, and merge the tensor tables.

use std::path::{Path, PathBuf};

use super::{
    read_file, GgufError, Header, Options, KEY_SPLIT_COUNT, KEY_SPLIT_NO, KEY_SPLIT_TENSORS_COUNT,
};

/// Split a shard file name into `(prefix, index (1-based), count)`.
pub fn parse_shard_name(path: &Path) -> Option<(String, u32, u32)> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".gguf")?;
    // ...-NNNNN-of-MMMMM
    let (head, count) = stem.rsplit_once("-of-")?;
    let (prefix, idx) = head.rsplit_once('-')?;
    if idx.len() != 5 || count.len() != 5 {
        return None;
    }
    let idx: u32 = idx.parse().ok()?;
    let count: u32 = count.parse().ok()?;
    if idx == 0 || idx > count {
        return None;
    }
    Some((prefix.to_string(), idx, count))
}

/// All shard paths of the model `path` belongs to, in order; `None` if the
/// name does not follow the split naming.
pub fn shard_paths(path: &Path) -> Option<Vec<PathBuf>> {
    let (prefix, _, count) = parse_shard_name(path)?;
    let dir = path.parent().unwrap_or_else(|| Path::new(""));
    Some(
        (1..=count)
            .map(|i| dir.join(format!("{prefix}-{i:05}-of-{count:05}.gguf")))
            .collect(),
    )
}

/// One file of a (possibly split) model.
#[derive(Clone, Debug)]
pub struct Shard {
    pub path: PathBuf,
    pub header: Header,
    pub file_len: u64,
}

/// Read a model given any of its files: a single file, or every shard of a
/// split model. The result is in shard order.
pub fn read_model(path: &Path, opts: &Options) -> Result<Vec<Shard>, GgufError> {
    let paths = match shard_paths(path) {
        Some(p) if p.len() > 1 => p,
        _ => vec![path.to_path_buf()],
    };
    let mut shards = Vec::with_capacity(paths.len());
    for p in &paths {
        if !p.exists() {
            return Err(GgufError::Shard {
                path: p.clone(),
                problem: "missing shard".into(),
            });
        }
        let header = read_file(p, opts)?;
        let file_len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        shards.push(Shard {
            path: p.clone(),
            header,
            file_len,
        });
    }
    if shards.len() > 1 {
        let views: Vec<(&Path, &Header)> = shards
            .iter()
            .map(|s| (s.path.as_path(), &s.header))
            .collect();
        check_split_keys(&views)?;
    }
    Ok(shards)
}

/// Check that the shards, in order, carry consistent split keys and
/// disjoint tensor names. `path` only labels errors (a URL for remote shards).
pub(crate) fn check_split_keys(shards: &[(&Path, &Header)]) -> Result<(), GgufError> {
    let n = shards.len() as u64;
    for (i, (path, header)) in shards.iter().enumerate() {
        let no = header.get(KEY_SPLIT_NO).and_then(|v| v.as_u64());
        let count = header.get(KEY_SPLIT_COUNT).and_then(|v| v.as_u64());
        if no != Some(i as u64) {
            return Err(GgufError::Shard {
                path: path.to_path_buf(),
                problem: format!("split.no is {no:?}, expected {i}"),
            });
        }
        if count != Some(n) {
            return Err(GgufError::Shard {
                path: path.to_path_buf(),
                problem: format!("split.count is {count:?}, expected {n}"),
            });
        }
    }
    let total: u64 = shards.iter().map(|(_, h)| h.tensors.len() as u64).sum();
    let Some((first_path, first)) = shards.first() else {
        return Ok(());
    };
    if let Some(expect) = first.get(KEY_SPLIT_TENSORS_COUNT).and_then(|v| v.as_u64()) {
        if expect != total {
            return Err(GgufError::Shard {
                path: first_path.to_path_buf(),
                problem: format!(
                    "split.tensors.count is {expect} but the shards hold {total} tensors"
                ),
            });
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (path, header) in shards {
        for t in &header.tensors {
            // (Within one file read_header already rejects duplicates.)
            if !seen.insert(t.name.as_str()) {
                return Err(GgufError::Shard {
                    path: path.to_path_buf(),
                    problem: format!("tensor '{}' is also in an earlier shard", t.name),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{write::Writer, GgmlType, Value};

    #[test]
    fn parses_split_names() {
        let p = Path::new("/m/Qwen3-Coder-Next-Q5_K_M-00002-of-00005.gguf");
        assert_eq!(
            parse_shard_name(p),
            Some(("Qwen3-Coder-Next-Q5_K_M".into(), 2, 5))
        );
        let all = shard_paths(p).unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(
            all[0],
            Path::new("/m/Qwen3-Coder-Next-Q5_K_M-00001-of-00005.gguf")
        );
        assert_eq!(parse_shard_name(Path::new("model.gguf")), None);
        assert_eq!(parse_shard_name(Path::new("m-00000-of-00002.gguf")), None);
        assert_eq!(parse_shard_name(Path::new("m-00003-of-00002.gguf")), None);
    }

    fn write_split(dir: &Path, n: u32, tensors_count_key: u64) {
        for i in 0..n {
            let mut w = Writer::new();
            if i == 0 {
                w.kv("general.architecture", Value::String("llama".into()));
                w.kv(
                    KEY_SPLIT_TENSORS_COUNT,
                    Value::I32(tensors_count_key as i32),
                );
            }
            w.kv(KEY_SPLIT_NO, Value::U16(i as u16));
            w.kv(KEY_SPLIT_COUNT, Value::U16(n as u16));
            w.tensor(
                &format!("blk.{i}.attn_q.weight"),
                &[256, 256],
                GgmlType::Q4_K,
            );
            w.write_sparse(&dir.join(format!("m-{:05}-of-{n:05}.gguf", i + 1)))
                .unwrap();
        }
    }

    #[test]
    fn reads_every_shard_from_any_shard() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), 3, 3);
        let shards = read_model(
            &dir.path().join("m-00002-of-00003.gguf"),
            &Options::default(),
        )
        .unwrap();
        assert_eq!(shards.len(), 3);
        assert_eq!(shards[2].header.tensors[0].name, "blk.2.attn_q.weight");
    }

    #[test]
    fn inconsistent_or_missing_shards_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), 3, 4);
        let err = read_model(
            &dir.path().join("m-00001-of-00003.gguf"),
            &Options::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("split.tensors.count"), "{err}");
        std::fs::remove_file(dir.path().join("m-00003-of-00003.gguf")).unwrap();
        let err = read_model(
            &dir.path().join("m-00001-of-00003.gguf"),
            &Options::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("missing shard"), "{err}");
    }

    /// A 5-shard model of ~0.5 GB (sparse) shards; returns each shard's header length
    /// without its alignment padding (computed by the writer, independently
    /// of the reader).
    fn write_five(dir: &Path) -> Vec<u64> {
        let mut lens = Vec::new();
        for i in 0..5u32 {
            let mut w = Writer::new();
            if i == 0 {
                w.kv("general.architecture", Value::String("llama".into()));
                w.kv(KEY_SPLIT_TENSORS_COUNT, Value::I32(5 * 8));
            }
            w.kv(KEY_SPLIT_NO, Value::U16(i as u16));
            w.kv(KEY_SPLIT_COUNT, Value::U16(5));
            for j in 0..8 {
                let name = format!("blk.{}.ffn_up.weight", i * 8 + j);
                w.tensor(&name, &[4096, 14336], GgmlType::Q8_0);
            }
            w.write_sparse(&dir.join(format!("m-{:05}-of-00005.gguf", i + 1)))
                .unwrap();
            // Alignment 1 pads nothing: the header proper.
            w.alignment = 1;
            lens.push(w.finish().len() as u64);
        }
        lens
    }

    #[test]
    fn one_shard_of_five_touches_only_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let lens = write_five(dir.path());
        let path = dir.path().join("m-00003-of-00005.gguf");
        let file_len = std::fs::metadata(&path).unwrap().len();
        assert!(file_len > 450_000_000, "a ~0.5 GB sparse shard: {file_len}");

        // What the parser consumes: exactly the header, not one padding byte.
        let f = std::fs::File::open(&path).unwrap();
        let mut r = crate::gguf::CountingReader::new(std::io::BufReader::new(f));
        let opts = Options {
            file_len: Some(file_len),
            ..Options::default()
        };
        let h = crate::gguf::read_header(&mut r, &opts).unwrap();
        assert_eq!(r.count(), lens[2]);
        assert_eq!(h.bytes_read, lens[2]);

        // What is read from the file: the header's one page.
        let (h2, io) = crate::gguf::read_file_counted(&path, &Options::default()).unwrap();
        assert_eq!(h2, h);
        assert_eq!(io, crate::gguf::FIRST_READ as u64);
        assert!(io * 100_000 < file_len, "{io} of {file_len}");
    }

    #[test]
    fn five_shards_from_the_last_one() {
        let dir = tempfile::tempdir().unwrap();
        write_five(dir.path());
        let shards = read_model(
            &dir.path().join("m-00005-of-00005.gguf"),
            &Options::default(),
        )
        .unwrap();
        let names: Vec<&str> = shards
            .iter()
            .flat_map(|s| s.header.tensors.iter().map(|t| t.name.as_str()))
            .collect();
        assert_eq!(names.len(), 40);
        assert_eq!(names[39], "blk.39.ffn_up.weight");
        assert_eq!(
            shards[4].header.get(KEY_SPLIT_NO).unwrap().as_u64(),
            Some(4)
        );
    }

    #[test]
    fn a_tensor_in_two_shards_is_named() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..2u16 {
            let mut w = Writer::new();
            w.kv(KEY_SPLIT_NO, Value::U16(i));
            w.kv(KEY_SPLIT_COUNT, Value::U16(2));
            w.tensor("blk.0.attn_q.weight", &[256, 2], GgmlType::Q4_K);
            w.write_sparse(&dir.path().join(format!("d-{:05}-of-00002.gguf", i + 1)))
                .unwrap();
        }
        let err = read_model(
            &dir.path().join("d-00001-of-00002.gguf"),
            &Options::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("d-00002-of-00002.gguf")
                && err.contains("'blk.0.attn_q.weight' is also in an earlier shard"),
            "{err}"
        );
    }
}

//! The hardware presets in `hardware/*.toml`, compiled into the binary so
//! `ggplan hw h100-sxm-80gb` works from anywhere and tests can use them
//! without paths.

use super::error::HardwareError;
use super::file::Hardware;

/// Resolve what a user typed for `--hw`: an existing path (or anything that
/// looks like one: ends in `.toml` or contains `/`) is loaded as a file,
/// anything else as a preset name. Returns the hardware and a label for
/// messages ("preset h100-sxm-80gb" or the path).
pub fn load_file_or_preset(arg: &str) -> Result<(Hardware, String), HardwareError> {
    let path = std::path::Path::new(arg);
    if path.exists() || arg.ends_with(".toml") || arg.contains('/') {
        return Ok((Hardware::from_path(path)?, path.display().to_string()));
    }
    match load(arg) {
        Some(hw) => Ok((hw?, format!("preset {arg}"))),
        None => Err(HardwareError::UnknownPreset {
            name: arg.to_string(),
            known: names().collect::<Vec<_>>().join(", "),
        }),
    }
}

/// `(name, file text)` for every preset, sorted by name. The name is the
/// file stem in `hardware/`.
pub const PRESETS: &[(&str, &str)] = &[
    (
        "8x-rtx-a4000-epyc-7532",
        include_str!("../../hardware/8x-rtx-a4000-epyc-7532.toml"),
    ),
    (
        "epyc-9655-cpu",
        include_str!("../../hardware/epyc-9655-cpu.toml"),
    ),
    (
        "h100-sxm-80gb",
        include_str!("../../hardware/h100-sxm-80gb.toml"),
    ),
    (
        "h200-sxm-141gb",
        include_str!("../../hardware/h200-sxm-141gb.toml"),
    ),
    (
        "laptop-rtx4060",
        include_str!("../../hardware/laptop-rtx4060.toml"),
    ),
    (
        "rtx4090-rtx5070ti",
        include_str!("../../hardware/rtx4090-rtx5070ti.toml"),
    ),
    (
        "ryzen-ai-max-395-128gb",
        include_str!("../../hardware/ryzen-ai-max-395-128gb.toml"),
    ),
    (
        "ryzen-ai-max-395-96gb",
        include_str!("../../hardware/ryzen-ai-max-395-96gb.toml"),
    ),
    (
        "strix-halo-rpc-pair",
        include_str!("../../hardware/strix-halo-rpc-pair.toml"),
    ),
    (
        "tesla-p4-i7-4770k",
        include_str!("../../hardware/tesla-p4-i7-4770k.toml"),
    ),
];

/// The preset names, sorted.
pub fn names() -> impl Iterator<Item = &'static str> {
    PRESETS.iter().map(|(n, _)| *n)
}

/// A preset's file text.
pub fn text(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Load a preset by name (`None` if there is no such preset).
pub fn load(name: &str) -> Option<Result<Hardware, HardwareError>> {
    text(name).map(|t| {
        Hardware::from_toml_str(t).map(|mut hw| {
            hw.name.get_or_insert_with(|| name.to_string());
            hw
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware::{DeviceKind, Pool};
    use crate::units::Bytes;
    use std::path::Path;

    /// Every file in hardware/ loads, validates, has no warnings, and is
    /// compiled in (so a new preset cannot be forgotten in `PRESETS`).
    #[test]
    fn every_preset_file_loads_and_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware");
        let mut on_disk = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let hw = Hardware::from_path(&path)
                    .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
                assert!(
                    hw.warnings().is_empty(),
                    "{}: {:?}",
                    path.display(),
                    hw.warnings()
                );
                let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
                assert_eq!(
                    text(&stem),
                    Some(std::fs::read_to_string(&path).unwrap().as_str())
                );
                on_disk.push(stem);
            }
        }
        on_disk.sort();
        assert_eq!(on_disk, names().collect::<Vec<_>>());
        assert!(on_disk.len() >= 10, "{on_disk:?}");
    }

    #[test]
    fn every_number_has_a_named_source() {
        // Each key = value line with a number carries a comment, or sits in a
        // block whose comment names the source (the A4000 server).
        for (name, text) in PRESETS {
            for line in text.lines() {
                let code = line.split('#').next().unwrap_or("").trim();
                let is_number = code
                    .split_once('=')
                    .is_some_and(|(_, v)| v.trim().parse::<f64>().is_ok());
                if is_number && !line.contains('#') && *name != "8x-rtx-a4000-epyc-7532" {
                    panic!("{name}: no source comment on `{line}`");
                }
            }
        }
    }

    #[test]
    fn presets_carry_the_brief_numbers() {
        let hw = load("rtx4090-rtx5070ti").unwrap().unwrap();
        assert_eq!(hw.name.as_deref(), Some("rtx4090-rtx5070ti"));
        let cuda1 = hw.device("CUDA1").unwrap();
        assert_eq!(hw.effective_capacity(cuda1), Bytes::from_mib(16303 - 3500));

        let a4000 = load("8x-rtx-a4000-epyc-7532").unwrap().unwrap();
        assert_eq!(a4000.devices.len(), 8);
        assert!(a4000.devices.iter().all(|d| d.memory_mib == 16376));

        let cpu = load("epyc-9655-cpu").unwrap().unwrap();
        assert!(cpu.devices.is_empty());
        assert_eq!(cpu.host.cores, Some(96));
        assert_eq!(cpu.host.numa_nodes, Some(2));

        let pair = load("strix-halo-rpc-pair").unwrap().unwrap();
        assert_eq!(pair.devices[0].kind, DeviceKind::Rpc);
        assert_eq!(pair.devices[0].pool(), Pool::Own);
        assert_eq!(pair.devices[1].pool(), Pool::Host);
        // Box A's RAM once (120 GiB after reserve) + box B's 120 GiB.
        assert_eq!(pair.total_capacity(), Bytes::from_mib(2 * 122880));

        assert!(load("no-such-preset").is_none());
    }

    #[test]
    fn file_or_preset_resolution() {
        let (hw, label) = load_file_or_preset("epyc-9655-cpu").unwrap();
        assert_eq!(
            (hw.host.cores, label.as_str()),
            (Some(96), "preset epyc-9655-cpu")
        );
        let err = load_file_or_preset("epyc").unwrap_err().to_string();
        assert!(
            err.starts_with("no hardware file or preset named \"epyc\" (presets: 8x-rtx"),
            "{err}"
        );
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/hardware/laptop-rtx4060.toml");
        let (hw, label) = load_file_or_preset(path).unwrap();
        assert_eq!((hw.devices[0].memory_mib, label.as_str()), (8188, path));
        // Looks like a path: never silently treated as a preset name.
        assert!(matches!(
            load_file_or_preset("missing.toml"),
            Err(HardwareError::Read { .. })
        ));
    }
}

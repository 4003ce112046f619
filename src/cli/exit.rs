//! Documented exit codes (README "Exit codes"). One place, so scripts and
//! schedulers can rely on them.

/// Success.
pub const OK: u8 = 0;
/// A bug or an unexpected internal state.
pub const INTERNAL: u8 = 1;
/// Bad input: usage, an unreadable or invalid model, hardware or config file.
pub const INPUT: u8 = 2;
/// The request does not fit the hardware (the message names the device and the shortfall).
pub const DOES_NOT_FIT: u8 = 3;
/// I/O or network failure (a file that cannot be read or written, a remote that does not answer).
pub const IO: u8 = 4;

use crate::hardware::{HardwareError, ProbeError, WriteError};

/// Map an error chain to an exit code. Library errors that mean "bad input"
/// are recognised by type; plain I/O errors map to [`IO`].
pub fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(m) = cause.downcast_ref::<crate::model::ModelError>() {
            return match m {
                crate::model::ModelError::Read { .. } | crate::model::ModelError::Write { .. } => {
                    IO
                }
                crate::model::ModelError::Gguf { source, .. } if source.is_io() => IO,
                _ => INPUT,
            };
        }
        // A GGUF that cannot be opened or fetched is I/O (4); one that
        // parses wrongly is bad input (2).
        if let Some(e) = cause.downcast_ref::<crate::gguf::GgufError>() {
            return if e.is_io() { IO } else { INPUT };
        }
        if let Some(e) = cause.downcast_ref::<HardwareError>() {
            return if matches!(e, HardwareError::Read { .. }) {
                IO
            } else {
                INPUT
            };
        }
        if let Some(e) = cause.downcast_ref::<WriteError>() {
            return if matches!(e, WriteError::Exists { .. }) {
                INPUT
            } else {
                IO
            };
        }
        if let Some(e) = cause.downcast_ref::<ProbeError>() {
            return if matches!(e, ProbeError::Fixture { .. }) {
                INPUT
            } else {
                IO
            };
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return IO;
        }
    }
    INPUT
}

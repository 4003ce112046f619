//! The comment block written above a `models.conf` / preset section: what
//! the plan predicted, which ggplan made it and for which hardware file.
//! Its first line starts with [`MARKER`](super::sections::MARKER) so that
//! an update replaces it together with its section.

use super::sections::MARKER;
use super::{Deployment, EmitError, Format};

fn check(format: Format, what: &str, value: &str) -> Result<(), EmitError> {
    if value.chars().any(char::is_control) {
        return Err(EmitError::Unrepresentable {
            format,
            what: what.to_string(),
            value: value.to_string(),
            reason: "contains a control character",
        });
    }
    Ok(())
}

/// The comment lines (without line breaks) for `d`.
pub(crate) fn comment_block(format: Format, d: &Deployment) -> Result<Vec<String>, EmitError> {
    let mut out = Vec::new();
    let Some(s) = &d.summary else {
        out.push(format!("{MARKER} plan for {}", d.model_path));
        return Ok(out);
    };
    check(format, "ggplan version", &s.ggplan_version)?;
    out.push(format!(
        "{MARKER} {} plan for {}",
        s.ggplan_version, d.model_path
    ));
    if let Some(hw) = &s.hardware_file {
        check(format, "hardware file", hw)?;
        out.push(format!("# hardware: {hw}"));
    }
    let width = s
        .devices
        .iter()
        .map(|p| p.device.chars().count())
        .max()
        .unwrap_or(0);
    for p in &s.devices {
        check(format, "device name", &p.device)?;
        let mut line = format!(
            "#   {:<width$}  {:>10} predicted",
            p.device,
            p.predicted.to_string()
        );
        if let Some(cap) = p.capacity {
            line.push_str(&format!(" of {cap}"));
        }
        out.push(line);
    }
    if let Some(t) = s.tokens_per_s {
        out.push(format!(
            "# speed: {:.1} tok/s prompt, {:.1} tok/s generation (predicted)",
            t.prompt, t.generation
        ));
    }
    Ok(out)
}

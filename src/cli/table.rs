//! Shared table style: every command prints through here so the look is one.

use comfy_table::{presets, ContentArrangement, Table};

/// A new table in the project's style (UTF-8, condensed, wrapped to the terminal).
pub fn new_table<I, S>(header: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED);
    t.set_content_arrangement(ContentArrangement::Dynamic);
    t.set_header(header);
    t
}

//! Printing answers: `--output json` writes the API's JSON as it came (a list as one array);
//! tables print a list as aligned columns and one object as `field  value` lines, both cut to the
//! terminal's width.

use super::args::Output;
use super::Io;
use serde_json::Value;

/// The width used when stdout is not a terminal and `COLUMNS` is not set.
const DEFAULT_WIDTH: usize = 120;
/// The narrowest a column is cut to.
const MIN_COLUMN: usize = 6;

/// The format in effect: the flag, else table on a terminal and json otherwise.
pub fn format(flag: Option<Output>, io: &Io<'_>) -> Output {
    flag.unwrap_or(if io.out_is_terminal { Output::Table } else { Output::Json })
}

/// Prints a list: a JSON array, or a table of `columns`.
pub fn list(io: &mut Io<'_>, format: Output, items: &[Value], columns: &[&str]) {
    match format {
        Output::Json => json(io, &Value::Array(items.to_vec())),
        Output::Table => {
            if items.is_empty() {
                io.line("(none)");
                return;
            }
            let rows: Vec<Vec<String>> =
                items.iter().map(|item| columns.iter().map(|c| cell(&item[*c])).collect()).collect();
            let width = io.width.unwrap_or(DEFAULT_WIDTH);
            for line in table(columns, &rows, width) {
                io.line(&line);
            }
        }
    }
}

/// Prints one object: JSON, or one `field  value` line per field.
pub fn object(io: &mut Io<'_>, format: Output, value: &Value) {
    match format {
        Output::Json => json(io, value),
        Output::Table => {
            let width = io.width.unwrap_or(DEFAULT_WIDTH);
            for line in fields(value, width) {
                io.line(&line);
            }
        }
    }
}

/// Prints a done message for an answer without a body (204): nothing in JSON, whose document
/// is the empty answer; a sentence in a table.
pub fn done(io: &mut Io<'_>, format: Output, message: &str) {
    if format == Output::Table {
        io.line(message);
    }
}

fn json(io: &mut Io<'_>, value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => io.line(&text),
        Err(e) => io.error_line(&format!("error: cannot print JSON: {e}")),
    }
}

/// A value as one table cell: strings bare, arrays comma-joined, null empty, objects as JSON.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Cuts `text` to `width` characters, marking the cut with `…`.
fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Lays out a table within `width`: columns keep their natural width while it fits; otherwise the
/// widest column is narrowed, one step at a time, down to [`MIN_COLUMN`].
pub fn table(headers: &[&str], rows: &[Vec<String>], width: usize) -> Vec<String> {
    let mut widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| rows.iter().map(|r| r[i].chars().count()).chain([h.len()]).max().unwrap_or(0))
        .collect();
    let gaps = 2 * headers.len().saturating_sub(1);
    while widths.iter().sum::<usize>() + gaps > width {
        let Some((widest, w)) = widths.iter().copied().enumerate().max_by_key(|(_, w)| *w) else { break };
        if w <= MIN_COLUMN {
            break;
        }
        widths[widest] = w - 1;
    }
    let render = |cells: Vec<String>| -> String {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(c, w)| format!("{:<w$}", cut(c, *w), w = *w)).collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut lines = vec![render(headers.iter().map(|h| h.to_uppercase()).collect())];
    lines.extend(rows.iter().map(|r| render(r.clone())));
    lines
}

/// One object as `field  value` lines; nested objects are flattened to `a.b`.
pub fn fields(value: &Value, width: usize) -> Vec<String> {
    let mut pairs = Vec::new();
    flatten("", value, &mut pairs);
    let key_width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let value_width = width.saturating_sub(key_width + 2).max(MIN_COLUMN * 2);
    pairs.into_iter().map(|(k, v)| format!("{k:<key_width$}  {}", cut(&v, value_width)).trim_end().to_owned()).collect()
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_owned(), cell(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_fit_the_width_and_mark_cuts() {
        let rows = vec![vec!["0b8c1f2e-aaaa-bbbb-cccc-0123456789ab".to_owned(), "A rather long app name".to_owned()]];
        let lines = table(&["id", "name"], &rows, 30);
        assert!(lines.iter().all(|l| l.chars().count() <= 30), "{lines:?}");
        assert!(lines[1].contains('…'));
        let wide = table(&["id", "name"], &rows, 200);
        assert_eq!(wide[1], "0b8c1f2e-aaaa-bbbb-cccc-0123456789ab  A rather long app name");
        assert!(wide[0].starts_with("ID "));
    }

    #[test]
    fn objects_flatten_and_cells_join() {
        let v = json!({"a": 1, "b": {"c": ["x", "y"], "d": null}});
        assert_eq!(fields(&v, 80), vec!["a    1", "b.c  x,y", "b.d"]);
    }
}

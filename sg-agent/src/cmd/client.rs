//! What every command that talks to the daemon shares: where the daemon
//! listens (`--socket`), one call, and how answers are shown (`--json`,
//! aligned tables, `key: value` lines).
//!
//! Commands send the user's text as typed; the daemon parses it and names the
//! field in its errors, which reach the user verbatim.

use std::{
    borrow::Cow,
    collections::BTreeMap,
    fmt::Write as _,
    io::Read as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use serde::de::DeserializeOwned;
use serde_json::Value;
use sg_agent::api::{self, Request};
use sg_policy::validate::forbidden_char;

/// `--socket PATH`, accepted by every command.
#[derive(clap::Args)]
pub struct Connection {
    /// The daemon's API socket: where `run` listens, and where every other
    /// command finds it.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "SG_AGENT_SOCKET",
        default_value = api::DEFAULT_SOCKET,
        display_order = 1000
    )]
    pub socket: PathBuf,
}

/// Sends one request to the daemon at `socket` and returns its result.
///
/// A refusal is the daemon's message alone; the caller prints it verbatim.
pub fn request(socket: &Path, request: &Request) -> anyhow::Result<Value> {
    // The error's text already carries its cause; converting it to a plain
    // message keeps `{:#}` from printing the cause twice.
    api::call(socket, request).map_err(|e| anyhow::Error::msg(e.to_string()))
}

/// `--json`, accepted by every verb of the command that flattens it.
#[derive(clap::Args)]
pub struct Output {
    /// Print the daemon's JSON result instead of a table.
    #[arg(long, global = true, display_order = 999)]
    pub json: bool,
}

impl Output {
    /// Prints `value` as pretty JSON with `--json`; otherwise reads it as a
    /// `T` and prints what `text` makes of it.
    pub fn show<T: DeserializeOwned>(
        &self,
        value: Value,
        text: impl FnOnce(T) -> String,
    ) -> anyhow::Result<()> {
        if self.json {
            return print_json(&value);
        }
        print!("{}", printable(&text(decode(value)?)));
        Ok(())
    }
}

/// Prints `value` as pretty JSON, every character a terminal would act on
/// written as a JSON escape (the same JSON, safe to show).
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", json_printable(&serde_json::to_string_pretty(value)?));
    Ok(())
}

/// `text` with every character free text may not hold
/// ([`forbidden_char`]: control characters, bidirectional formatting, line
/// separators) written as `\u{…}`, whatever the daemon sent: a description
/// stored by an older agent, or a daemon that does not check, cannot move
/// the cursor, recolour the terminal or reorder what it shows. Idempotent.
pub fn printable(text: &str) -> Cow<'_, str> {
    escape(text, |c, out| {
        let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
    })
}

/// [`printable`] for JSON text: the escapes are JSON's (`\u202e`), so the
/// document means the same. Every such character is inside a string.
pub fn json_printable(text: &str) -> Cow<'_, str> {
    escape(text, |c, out| {
        let _ = write!(out, "\\u{:04x}", u32::from(c));
    })
}

fn escape(text: &str, write: impl Fn(char, &mut String)) -> Cow<'_, str> {
    if !text.chars().any(keep_out) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if keep_out(c) {
            write(c, &mut out);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// What a terminal must not receive raw; the line breaks of our own output
/// are not text from the daemon and pass (cells and values never hold one:
/// [`Table`] and [`fields`] escape them before joining lines).
fn keep_out(c: char) -> bool {
    c != '\n' && forbidden_char(c).is_some()
}

/// Reads the daemon's result as a `T`.
pub fn decode<T: DeserializeOwned>(value: Value) -> anyhow::Result<T> {
    serde_json::from_value(value).context("sg-agent answered in a shape this command does not know")
}

/// Rows of text in aligned columns: columns of numbers to the right, the
/// rest to the left, two spaces between columns, no trailing blanks.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|&h| h.to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped. A cell
    /// is printed as [`cell_text`] makes it: no control characters.
    pub fn row(&mut self, mut cells: Vec<String>) {
        for c in &mut cells {
            *c = cell_text(c);
        }
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as lines of text, title line first.
    pub fn render(&self) -> String {
        let columns = self.header.len();
        let width = |c: usize| {
            self.rows
                .iter()
                .chain([&self.header])
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..columns).map(width).collect();
        // Blank and `-` (nothing to count) fit either kind of column.
        let blank = |cell: &str| cell.is_empty() || cell == "-";
        let numeric: Vec<bool> = (0..columns)
            .map(|c| {
                self.rows.iter().any(|r| !blank(&r[c]))
                    && self.rows.iter().all(|r| blank(&r[c]) || is_number(&r[c]))
            })
            .collect();
        let mut out = String::new();
        for row in [&self.header].into_iter().chain(&self.rows) {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c > 0 {
                    line.push_str("  ");
                }
                let pad = widths[c] - cell.chars().count();
                if numeric[c] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out
    }
}

fn is_number(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|&b| b == b'.').count() <= 1
}

/// A table cell or a value of [`fields`]: [`printable`], and a line break
/// escaped too, so that one cell stays on one line.
pub fn cell_text(text: &str) -> String {
    printable(text).replace('\n', "\\u{a}")
}

/// `key: value` lines with the values aligned; keys and values printed as
/// [`cell_text`] makes them.
pub fn fields<K: AsRef<str>>(pairs: &[(K, String)]) -> String {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (cell_text(k.as_ref()), cell_text(v)))
        .collect();
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in &pairs {
        let k = format!("{k}:");
        let _ = writeln!(out, "{}", format!("{k:<w$} {v}", w = width + 1).trim_end());
    }
    out
}

/// A JSON object as `key: value` pairs: nested objects as dotted keys,
/// arrays of plain values joined by commas, other arrays by index.
pub fn flatten(value: &Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
        let key = |k: &str| {
            if prefix.is_empty() {
                k.to_owned()
            } else {
                format!("{prefix}.{k}")
            }
        };
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    walk(&key(k), v, out);
                }
            }
            Value::Array(items)
                if items
                    .iter()
                    .any(|v| matches!(v, Value::Object(_) | Value::Array(_))) =>
            {
                for (i, v) in items.iter().enumerate() {
                    walk(&format!("{prefix}[{i}]"), v, out);
                }
            }
            Value::Array(items) => {
                let joined: Vec<String> = items.iter().map(cell).collect();
                out.push((prefix.to_owned(), joined.join(", ")));
            }
            other => out.push((prefix.to_owned(), cell(other))),
        }
    }
    let mut out = Vec::new();
    walk("", value, &mut out);
    out
}

/// A JSON value as a table cell: strings bare, null blank, the rest as JSON.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Each item on a line of its own (as [`cell_text`] makes it).
pub fn lines<T: AsRef<str>>(items: &[T]) -> String {
    let mut out = String::new();
    for item in items {
        out.push_str(&cell_text(item.as_ref()));
        out.push('\n');
    }
    out
}

/// `yes` or `no`.
pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// `1 rule`, `2 rules`.
pub fn count(n: usize, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// Items joined by `, `.
pub fn joined<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `KEY=VALUE` for `--tag`.
pub fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

/// Tags from repeated `--tag KEY=VALUE`; a key given twice is refused.
pub fn tags(pairs: &[(String, String)]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for (k, v) in pairs {
        if map.insert(k.clone(), v.clone()).is_some() {
            bail!("--tag {k} is given twice");
        }
    }
    Ok(map)
}

/// A replacement list for a modify request: the values given, an empty list
/// with `clear`, or nothing (keep) when neither.
pub fn replacement<T: Clone>(values: &[T], clear: bool) -> Option<Vec<T>> {
    (clear || !values.is_empty()).then(|| values.to_vec())
}

/// The text of a file, or of standard input for `-`.
pub fn read_input(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }
}

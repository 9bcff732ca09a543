//! How client commands print: tables sized to the terminal, colour only on a terminal
//! and never with `NO_COLOR`, JSON when asked or when stdout is not a terminal.

use serde_json::Value;
use std::io::{IsTerminal, Write};

pub struct Style {
    pub color: bool,
    pub json: bool,
    pub width: usize,
}

impl Style {
    pub fn detect(json_flag: bool) -> Style {
        let tty = std::io::stdout().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        // COLUMNS, when set, wins (as for ls and git); then the terminal's own size.
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse::<usize>().ok())
            .or_else(|| terminal_size::terminal_size().map(|(w, _)| w.0 as usize))
            .filter(|w| *w > 0)
            .unwrap_or(120)
            .max(40);
        Style {
            color: tty && !no_color,
            json: json_flag || !tty,
            width,
        }
    }

    pub fn paint(&self, code: &str, text: &str) -> String {
        if self.color && !code.is_empty() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub fn status(&self, status: &str) -> String {
        let code = match status {
            "success" => "32",
            "failed" | "timeout" => "31",
            "rate_limited" => "33",
            "canceled" | "unauthorized" => "35",
            _ => "",
        };
        self.paint(code, status)
    }

    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }
}

/// Writes to stdout; a reader that went away (`| head`) ends the command quietly.
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

pub fn emit_json(value: &Value) {
    emit(&format!(
        "{}\n",
        serde_json::to_string_pretty(value).unwrap_or_default()
    ));
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// `text` cut to `width` characters with an ellipsis.
pub fn clip(text: &str, width: usize) -> String {
    if chars(text) <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// A column: header, and whether it may be shortened when the terminal is narrow.
pub struct Column {
    pub header: &'static str,
    pub shrink: bool,
    pub right: bool,
}

pub const fn col(header: &'static str, shrink: bool, right: bool) -> Column {
    Column {
        header,
        shrink,
        right,
    }
}

/// Lays `rows` out in `width` columns, shrinking the shrinkable ones (widest first)
/// until the table fits. `paint` styles a cell after layout (colour does not count).
pub fn table(
    style: &Style,
    columns: &[Column],
    rows: &[Vec<String>],
    paint: impl Fn(usize, &str) -> String,
) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| chars(c.header)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(chars(cell));
        }
    }
    let gaps = 2 * columns.len().saturating_sub(1);
    while widths.iter().sum::<usize>() + gaps > style.width {
        let widest = (0..columns.len())
            .filter(|i| columns[*i].shrink && widths[*i] > 6)
            .max_by_key(|i| widths[*i]);
        match widest {
            Some(i) => widths[i] -= 1,
            None => break,
        }
    }
    let line = |cells: Vec<String>, header: bool| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let text = clip(cell, widths[i]);
            let pad = widths[i].saturating_sub(chars(&text));
            let shown = if header {
                style.bold(&text)
            } else {
                paint(i, &text)
            };
            if i > 0 {
                out.push_str("  ");
            }
            if columns[i].right {
                out.push_str(&" ".repeat(pad));
                out.push_str(&shown);
            } else {
                out.push_str(&shown);
                if i + 1 < cells.len() {
                    out.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(columns.iter().map(|c| c.header.to_string()).collect(), true);
    for row in rows {
        out.push_str(&line(row.clone(), false));
    }
    out
}

/// Wraps `text` to `width`, each line prefixed by `indent`.
pub fn wrap(text: &str, width: usize, indent: &str) -> String {
    let room = width.saturating_sub(chars(indent)).max(20);
    let mut out = String::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        for word in paragraph.split(' ') {
            if !line.is_empty() && chars(&line) + 1 + chars(word) > room {
                out.push_str(indent);
                out.push_str(&line);
                out.push('\n');
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
            while chars(&line) > room {
                let head: String = line.chars().take(room).collect();
                out.push_str(indent);
                out.push_str(&head);
                out.push('\n');
                line = line.chars().skip(room).collect();
            }
        }
        out.push_str(indent);
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Cost in USD for a table: `$0.0123`, `-` when unknown.
pub fn usd(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x >= 1.0 => format!("${x:.2}"),
        Some(x) => format!("${x:.4}"),
        None => "-".into(),
    }
}

pub fn ms(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x >= 10_000.0 => format!("{:.1}s", x / 1000.0),
        Some(x) => format!("{x:.0}ms"),
        None => "-".into(),
    }
}

pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// How long ago an RFC 3339 time was, e.g. `5m ago`; the time itself when it cannot say.
pub fn ago(at: &Value, now_us: u64) -> String {
    let Some(t) = at.as_str() else {
        return "-".into();
    };
    let Some(us) = llmtap::timefmt::parse_rfc3339_us(t) else {
        return t.to_string();
    };
    let s = now_us.saturating_sub(us) / 1_000_000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => t.get(..10).unwrap_or(t).to_string(),
    }
}

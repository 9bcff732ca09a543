//! How client commands print: one table printer sized to the terminal, `name: value`
//! fields, money and durations, colour only on a terminal and never with `NO_COLOR`,
//! JSON when asked or when stdout is not a terminal.

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

/// How a column's cells are coloured on a terminal (after layout: colour takes no width).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Paint {
    Plain,
    /// A call or run status: green, red, yellow or magenta (`Style::status`).
    Status,
    /// A percentage, red below 10 % (rate-limit headroom).
    LowPercent,
}

/// A column: header, whether it may be shortened when the terminal is narrow, whether
/// it is right-aligned, and how its cells are painted.
pub struct Column {
    pub header: &'static str,
    pub shrink: bool,
    pub right: bool,
    pub paint: Paint,
}

pub const fn col(header: &'static str, shrink: bool, right: bool) -> Column {
    Column {
        header,
        shrink,
        right,
        paint: Paint::Plain,
    }
}

/// A status column (painted by status), never shortened.
pub const fn status_col(header: &'static str) -> Column {
    Column {
        header,
        shrink: false,
        right: false,
        paint: Paint::Status,
    }
}

impl Column {
    pub const fn painted(self, paint: Paint) -> Column {
        Column { paint, ..self }
    }
}

/// The one table printer of the client commands: `rows` laid out in `width` columns,
/// shrinking the shrinkable ones (widest first) until the table fits, each column
/// painted as it says; `empty` (a line of its own) when there are no rows.
pub fn table(style: &Style, columns: &[Column], rows: &[Vec<String>], empty: &str) -> String {
    if rows.is_empty() {
        return format!("{empty}\n");
    }
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
    let paint = |column: &Column, text: &str| match column.paint {
        Paint::Plain => text.to_string(),
        Paint::Status => style.status(text),
        Paint::LowPercent => {
            let low = text
                .strip_suffix('%')
                .and_then(|h| h.parse::<f64>().ok())
                .is_some_and(|h| h < 10.0);
            if low {
                style.paint("31", text)
            } else {
                text.to_string()
            }
        }
    };
    let line = |cells: Vec<String>, header: bool| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let text = clip(cell, widths[i]);
            let pad = widths[i].saturating_sub(chars(&text));
            let shown = if header {
                style.bold(&text)
            } else {
                paint(&columns[i], &text)
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

/// `name: value` on a line of its own, values aligned after a 14-column label; the
/// padding is counted on the label's visible text (colour codes take no room), and a
/// long label still gets one space after its colon.
pub fn field(style: &Style, out: &mut String, name: &str, value: impl std::fmt::Display) {
    let label = format!("{name}:");
    let pad = 14usize.saturating_sub(chars(&label)).max(1);
    out.push_str(&style.dim(&label));
    out.push_str(&" ".repeat(pad));
    out.push_str(&value.to_string());
    out.push('\n');
}

/// Wraps `text` to `width`, each line prefixed by `indent`; a line's own leading
/// spaces (pretty JSON) are kept on each of its wrapped lines.
pub fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    for paragraph in text.split('\n') {
        let body = paragraph.trim_start_matches(' ');
        let indent = format!("{indent}{}", &paragraph[..paragraph.len() - body.len()]);
        let indent = indent.as_str();
        let room = width.saturating_sub(chars(indent)).max(20);
        let mut line = String::new();
        for word in body.split(' ') {
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

/// Cost in USD: two decimals from a dollar, four below, and under a cent as many as
/// its first two significant digits need (`$0.00004`, `$0.000123`), trailing zeros
/// dropped down to two decimals; `$0.00` for nothing, `-` when unknown.
pub fn usd(v: &Value) -> String {
    let Some(x) = v.as_f64().filter(|x| x.is_finite() && *x >= 0.0) else {
        return "-".into();
    };
    if x == 0.0 {
        return "$0.00".into();
    }
    if x >= 1.0 {
        return format!("${x:.2}");
    }
    // Digits after the point up to the second significant one, at least four.
    let decimals = ((-x.log10()).floor() as usize + 2).clamp(4, 12);
    let text = format!("{x:.decimals$}");
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let kept = fraction.trim_end_matches('0');
    let kept = if kept.len() < 2 { &fraction[..2] } else { kept };
    format!("${whole}.{kept}")
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn costs_keep_their_significant_digits() {
        for (v, want) in [
            (json!(0.00004), "$0.00004"),
            (json!(0.000042), "$0.000042"),
            (json!(0.0001234), "$0.00012"),
            (json!(0.0123), "$0.0123"),
            (json!(0.5), "$0.50"),
            (json!(0.05), "$0.05"),
            (json!(12.345), "$12.35"),
            (json!(0.0), "$0.00"),
            (json!(null), "-"),
        ] {
            assert_eq!(usd(&v), want, "{v}");
        }
    }

    #[test]
    fn a_field_has_a_space_after_its_colon_in_colour_too() {
        for color in [false, true] {
            let style = Style {
                color,
                json: false,
                width: 80,
            };
            let mut out = String::new();
            field(&style, &mut out, "status", "success");
            field(&style, &mut out, "failed calls 24h", "3");
            let plain: String = strip_escapes(&out);
            assert!(plain.contains("status:       success"), "{plain:?}");
            assert!(plain.contains("failed calls 24h: 3"), "{plain:?}");
        }
    }

    fn strip_escapes(text: &str) -> String {
        let mut out = String::new();
        let mut in_escape = false;
        for c in text.chars() {
            match (in_escape, c) {
                (_, '\x1b') => in_escape = true,
                (true, 'm') => in_escape = false,
                (true, _) => {}
                (false, c) => out.push(c),
            }
        }
        out
    }

    #[test]
    fn a_status_column_is_painted_and_an_empty_table_says_so() {
        let style = Style {
            color: true,
            json: false,
            width: 80,
        };
        let columns = [col("ID", true, false), status_col("STATUS")];
        let rows = vec![vec!["c_1".to_string(), "failed".to_string()]];
        let out = table(&style, &columns, &rows, "none");
        assert!(out.contains("\x1b[31mfailed\x1b[0m"), "{out:?}");
        assert_eq!(
            table(&style, &columns, &[], "no calls match"),
            "no calls match\n"
        );
    }
}

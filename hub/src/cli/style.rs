//! How the command line shows things to people: colour only where it is
//! wanted, times in the tenant's time zone, tables with aligned columns.

use prost_types::Timestamp;
use std::io::IsTerminal;

/// `--color`: when to colour output (and the hub's log lines).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set or `TERM` is `dumb`.
    #[default]
    Auto,
    /// Always, also into a file or a pipe.
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// Whether to colour what goes to a stream that `is_terminal` or not,
    /// given the environment (`NO_COLOR`, `TERM`).
    pub fn resolve(self, is_terminal: bool, env: &dyn Fn(&str) -> Option<String>) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            // https://no-color.org: set and not empty means no colour.
            Self::Auto => {
                is_terminal
                    && env("NO_COLOR").is_none_or(|v| v.is_empty())
                    && env("TERM").is_none_or(|t| t != "dumb")
            }
        }
    }

    /// Whether to colour standard output.
    pub fn for_stdout(self) -> bool {
        self.resolve(std::io::stdout().is_terminal(), &|k| std::env::var(k).ok())
    }

    /// Whether to colour standard error (log lines).
    pub fn for_stderr(self) -> bool {
        self.resolve(std::io::stderr().is_terminal(), &|k| std::env::var(k).ok())
    }
}

/// The time zone of Italian municipalities, used unless `--time-zone`.
pub const DEFAULT_TIME_ZONE: &str = "Europe/Rome";

/// How to show things to people.
#[derive(Debug, Clone)]
pub struct Style {
    pub color: bool,
    pub time_zone: jiff::tz::TimeZone,
}

impl Style {
    /// For standard output, with `zone` (an IANA name, e.g. Europe/Rome).
    pub fn new(color: bool, zone: &str) -> anyhow::Result<Self> {
        let time_zone = jiff::tz::TimeZone::get(zone).map_err(|_| {
            anyhow::anyhow!(
                "--time-zone {zone}: not a time zone of the IANA database (e.g. Europe/Rome, UTC)"
            )
        })?;
        Ok(Self { color, time_zone })
    }

    /// A time for people: `2026-05-28 22:26:40 CEST`, or empty.
    pub fn time(&self, t: Option<&Timestamp>) -> String {
        t.and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok())
            .map(|t| {
                t.to_zoned(self.time_zone.clone())
                    .strftime("%Y-%m-%d %H:%M:%S %Z")
                    .to_string()
            })
            .unwrap_or_default()
    }

    /// `text` in the colour that suits an administrative or delivery
    /// status (or an adapter's state): green when done well, red when
    /// refused or failed, yellow while waiting on something.
    pub fn status(&self, text: &str) -> String {
        let code = match text {
            "APPROVED" | "ACKNOWLEDGED" | "REGISTERED" | "up" | "READY" => "32",
            "REJECTED" | "DEAD_LETTERED" | "CANCELLED" | "down" | "NOT READY" => "31",
            "RETRYING" | "OUTCOME_UNKNOWN" | "INTEGRATION_REQUESTED" | "degraded" => "33",
            _ => return text.to_string(),
        };
        self.paint(code, text)
    }

    /// Bold, for table headers.
    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    /// Dim, for secondary information.
    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color && !text.is_empty() {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

/// The width a cell takes on a terminal: characters, without colour codes.
fn width(cell: &str) -> usize {
    let mut n = 0;
    let mut in_escape = false;
    for c in cell.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

/// Rows under a header, each column as wide as its widest cell; the last
/// column is not padded (it may be long: an error, a title).
pub fn table(style: &Style, headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(width(cell));
            }
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = widths[i].saturating_sub(width(&cell));
            out.push_str(&cell);
            if i < last {
                out.push_str(&" ".repeat(pad));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(headers.iter().map(|h| style.bold(h)).collect());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Style {
        Style::new(false, DEFAULT_TIME_ZONE).unwrap()
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        let none = |_: &str| None;
        let no_color = |k: &str| (k == "NO_COLOR").then(|| "1".to_string());
        let dumb = |k: &str| (k == "TERM").then(|| "dumb".to_string());
        assert!(ColorChoice::Auto.resolve(true, &none));
        assert!(!ColorChoice::Auto.resolve(false, &none));
        assert!(!ColorChoice::Auto.resolve(true, &no_color));
        assert!(!ColorChoice::Auto.resolve(true, &dumb));
        assert!(ColorChoice::Always.resolve(false, &no_color));
        assert!(!ColorChoice::Never.resolve(true, &none));
    }

    #[test]
    fn times_are_shown_in_rome_summer_and_winter() {
        let style = plain();
        // 2026-07-01T10:00:00Z and 2026-01-15T10:00:00Z
        let summer = Timestamp {
            seconds: 1_782_900_000,
            nanos: 0,
        };
        let winter = Timestamp {
            seconds: 1_768_471_200,
            nanos: 0,
        };
        assert_eq!(style.time(Some(&summer)), "2026-07-01 12:00:00 CEST");
        assert_eq!(style.time(Some(&winter)), "2026-01-15 11:00:00 CET");
        assert_eq!(style.time(None), "");
        let utc = Style::new(false, "UTC").unwrap();
        assert_eq!(utc.time(Some(&winter)), "2026-01-15 10:00:00 UTC");
        assert!(Style::new(false, "Europe/Roma").is_err());
    }

    #[test]
    fn columns_are_aligned_whatever_the_colour() {
        let rows = vec![
            vec!["a".to_string(), "APPROVED".to_string(), "x".to_string()],
            vec![
                "longer".to_string(),
                "SUBMITTED".to_string(),
                "y".to_string(),
            ],
        ];
        let text = table(&plain(), &["ID", "STATUS", "NOTE"], &rows);
        assert_eq!(
            text,
            "ID      STATUS     NOTE\na       APPROVED   x\nlonger  SUBMITTED  y"
        );
        let coloured = Style::new(true, "UTC").unwrap();
        let rows = vec![vec![
            "a".to_string(),
            coloured.status("APPROVED"),
            "x".to_string(),
        ]];
        let text = table(&coloured, &["ID", "STATUS", "NOTE"], &rows);
        let stripped: String = text
            .replace("\x1b[1m", "")
            .replace("\x1b[32m", "")
            .replace("\x1b[0m", "");
        assert_eq!(stripped, "ID  STATUS    NOTE\na   APPROVED  x");
    }
}

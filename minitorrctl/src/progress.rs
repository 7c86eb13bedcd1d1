//! Showing a download's progress while `download_file --wait` / `wait` polls the daemon.
//!
//! Progress goes to stderr, never stdout: stdout carries only the result (one JSON document in
//! `--json` mode), so `x=$(minitorrctl wait g1 a.iso)` captures just that.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use proto::control::DownloadStatus;

use crate::render::human;
use crate::render::Style;

/// How often a plain progress line is printed when stderr is not a terminal (a log file should
/// not get five lines a second).
const PLAIN_EVERY: Duration = Duration::from_secs(2);

pub enum Reporter {
    /// stderr is a terminal: a live bar.
    Bar(ProgressBar),
    /// stderr is a pipe or file: a line every [`PLAIN_EVERY`].
    Plain { last: Option<Instant> },
    /// `--json` without a terminal: scripts asked for silence besides the document.
    Quiet,
}

impl Reporter {
    pub fn for_stderr(json: bool) -> Reporter {
        if std::io::stderr().is_terminal() {
            Reporter::Bar(new_bar(Style::for_stderr()))
        } else if json {
            Reporter::Quiet
        } else {
            Reporter::Plain { last: None }
        }
    }

    pub fn update(&mut self, d: &DownloadStatus) {
        match self {
            Reporter::Bar(bar) => {
                // A 0-byte file still gets a sensible (full) bar.
                bar.set_length(d.size.max(1));
                bar.set_position(if d.size == 0 {
                    0
                } else {
                    d.bytes_done.min(d.size)
                });
                bar.set_prefix(human::clean(&d.file).into_owned());
                bar.set_message(bar_message(d));
            }
            Reporter::Plain { last } => {
                if due(*last, PLAIN_EVERY) {
                    *last = Some(Instant::now());
                    // Progress is best effort: a closed stderr must not stop the wait.
                    let _ = std::io::stderr().write_all(human::render_progress_line(d).as_bytes());
                }
            }
            Reporter::Quiet => {}
        }
    }

    /// Remove the bar before the final result is printed.
    pub fn finish(&self) {
        if let Reporter::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Never printed yet, or printed long enough ago.
fn due(last: Option<Instant>, every: Duration) -> bool {
    last.map_or(true, |t| t.elapsed() >= every)
}

fn new_bar(style: Style) -> ProgressBar {
    let template = if style.color {
        "{prefix:.bold} {wide_bar:.cyan/blue} {msg}"
    } else {
        "{prefix} {wide_bar} {msg}"
    };
    let bar = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stderr());
    // The template is a constant; if it were invalid the plain default style is still fine.
    if let Ok(s) = ProgressStyle::with_template(template) {
        bar.set_style(s.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Numbers come from the daemon (its speed is measured over several seconds, steadier than
/// anything the CLI could derive from 200 ms polls), formatted like the rest of the output.
pub fn bar_message(d: &DownloadStatus) -> String {
    let peers = d.peers.iter().filter(|p| p.connected).count();
    format!(
        "{}  {}/{}  {}  ETA {}  {} peer{}",
        human::percent(d),
        human::size(d.bytes_done),
        human::size(d.size),
        human::speed(d.speed_bps),
        human::eta(d),
        peers,
        if peers == 1 { "" } else { "s" }
    )
}

/// While `upload_file` hashes a big file the daemon stays silent; show that work is happening.
pub fn spinner(message: String) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(s) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        bar.set_style(s);
    }
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::testdata::downloading;

    #[test]
    fn bar_message_has_all_numbers() {
        assert_eq!(
            bar_message(&downloading()),
            "45.0%  460.8 MiB/1.0 GiB  12.3 MiB/s  ETA 46s  2 peers"
        );
    }

    #[test]
    fn plain_lines_are_rate_limited() {
        assert!(due(None, PLAIN_EVERY));
        assert!(!due(Some(Instant::now()), PLAIN_EVERY));
    }
}

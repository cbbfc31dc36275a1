//! A progress line for long work (training steps, generation batches, data building).
//!
//! On a terminal the line is redrawn in place; elsewhere (a notebook, a CI log) a new line is
//! printed at most once per interval and at the end, so logs stay short. Progress goes to stdout:
//! in a notebook, stderr is where evcxr reports panics and errors, and the headless runner treats
//! any stderr output as a failed cell.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Minimum time between two printed lines when output is not a terminal.
const LOG_INTERVAL: Duration = Duration::from_secs(5);
/// Minimum time between two redraws on a terminal.
const TTY_INTERVAL: Duration = Duration::from_millis(100);

/// Tracks items done against an optional total and prints rate and ETA.
#[derive(Debug)]
pub struct Progress {
    label: String,
    unit: String,
    total: Option<u64>,
    done: u64,
    message: String,
    start: Instant,
    last_print: Option<Instant>,
    tty: bool,
    finished: bool,
}

impl Progress {
    /// Starts tracking `total` items (or an unknown number) under a label.
    pub fn new(label: impl Into<String>, total: Option<u64>) -> Self {
        Progress {
            label: label.into(),
            unit: "it".to_string(),
            total,
            done: 0,
            message: String::new(),
            start: Instant::now(),
            last_print: None,
            tty: std::io::stdout().is_terminal(),
            finished: false,
        }
    }

    /// Names the unit counted (default `it`), e.g. `step`, `tok`, `episode`.
    pub fn with_unit(mut self, unit: impl Into<String>) -> Self {
        self.unit = unit.into();
        self
    }

    /// Items done so far.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Counts `n` more items done and prints if it is time to.
    pub fn inc(&mut self, n: u64) {
        self.done += n;
        self.maybe_print();
    }

    /// Sets a short status shown at the end of the line, e.g. `loss 1.234`.
    pub fn set_message(&mut self, message: impl Into<String>) {
        self.message = message.into();
    }

    /// Whether a line has been printed yet (short work never prints one).
    pub fn shown(&self) -> bool {
        self.last_print.is_some()
    }

    /// Prints the final line (once) with the total elapsed time.
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.print(true);
    }

    /// The current progress line.
    pub fn line(&self) -> String {
        format_line(
            &self.label,
            &self.unit,
            self.done,
            self.total,
            self.start.elapsed(),
            &self.message,
        )
    }

    fn maybe_print(&mut self) {
        let now = Instant::now();
        let interval = if self.tty { TTY_INTERVAL } else { LOG_INTERVAL };
        let since = self.last_print.unwrap_or(self.start);
        if self.finished || now.duration_since(since) < interval {
            return;
        }
        self.last_print = Some(now);
        // On a terminal the line is redrawn in place until the final one ends it.
        self.print(!self.tty);
    }

    /// Writes the current line to stdout: over the previous one on a terminal, and ended with a
    /// newline when `newline` is set.
    fn print(&self, newline: bool) {
        let mut out = std::io::stdout().lock();
        let clear = if self.tty { "\r\x1b[2K" } else { "" };
        let end = if newline { "\n" } else { "" };
        let _ = write!(out, "{clear}{}{end}", self.line());
        let _ = out.flush();
    }
}

/// Formats a progress line: `label  done/total  pct  rate  elapsed  ETA  message`.
pub fn format_line(
    label: &str,
    unit: &str,
    done: u64,
    total: Option<u64>,
    elapsed: Duration,
    message: &str,
) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    let rate = if rate >= 1.0 || rate == 0.0 {
        format!("{rate:.2} {unit}/s")
    } else {
        format!("{:.2} s/{unit}", 1.0 / rate)
    };
    let mut parts = vec![label.to_string()];
    match total {
        Some(total) => {
            let pct = if total > 0 {
                100.0 * done as f64 / total as f64
            } else {
                100.0
            };
            parts.push(format!("{done}/{total} {unit}"));
            parts.push(format!("{pct:5.1}%"));
            parts.push(rate);
            parts.push(format!("elapsed {}", format_duration(elapsed)));
            if done > 0 && done < total {
                let eta = secs / done as f64 * (total - done) as f64;
                parts.push(format!(
                    "ETA {}",
                    format_duration(Duration::from_secs_f64(eta))
                ));
            }
        }
        None => {
            parts.push(format!("{done} {unit}"));
            parts.push(rate);
            parts.push(format!("elapsed {}", format_duration(elapsed)));
        }
    }
    if !message.is_empty() {
        parts.push(message.to_string());
    }
    parts.join("  ")
}

/// Formats a duration compactly: `42s`, `3m05s`, `1h02m`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_count_rate_and_eta() {
        let line = format_line(
            "sft",
            "step",
            25,
            Some(100),
            Duration::from_secs(50),
            "loss 1.234",
        );
        assert_eq!(
            line,
            "sft  25/100 step   25.0%  2.00 s/step  elapsed 50s  ETA 2m30s  loss 1.234"
        );
    }

    #[test]
    fn fast_work_shows_items_per_second_and_no_eta_when_done() {
        let line = format_line("gen", "tok", 300, Some(300), Duration::from_secs(10), "");
        assert_eq!(line, "gen  300/300 tok  100.0%  30.00 tok/s  elapsed 10s");
    }

    #[test]
    fn unknown_total() {
        let line = format_line("data", "item", 7, None, Duration::from_secs(3700), "");
        assert_eq!(line, "data  7 item  528.57 s/item  elapsed 1h01m");
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(Duration::from_secs(0)), "0s");
        assert_eq!(format_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(format_duration(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn counts_and_finishes_once() {
        let mut p = Progress::new("t", Some(3));
        p.inc(2);
        p.inc(1);
        assert_eq!(p.done(), 3);
        p.finish();
        p.finish();
        assert!(p.finished);
    }
}

//! Where output goes: data on stdout (text or one JSON object per line),
//! logs, warnings and progress on stderr. A closed stdout ends the process
//! quietly with exit code 0.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Output settings and the progress display.
pub struct Output {
    pub json: bool,
    pub quiet: bool,
    bar: Option<ProgressBar>,
    plain: Option<Mutex<Plain>>,
}

/// Progress as plain lines on a non-terminal stderr, at most every 5 s.
struct Plain {
    last: Instant,
    done: u64,
    total: Option<u64>,
    phase: String,
}

/// Writes a line on stdout; a closed stdout ends the process with code 0.
fn write_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

impl Output {
    pub fn new(json: bool, quiet: bool, no_progress: bool) -> Self {
        let show = !json && !quiet && !no_progress;
        let tty = std::io::stderr().is_terminal();
        let bar = (show && tty).then(|| {
            // Nothing is drawn until a phase starts.
            ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        });
        let plain = (show && !tty).then(|| {
            Mutex::new(Plain {
                last: Instant::now(),
                done: 0,
                total: None,
                phase: String::new(),
            })
        });
        Self {
            json,
            quiet,
            bar,
            plain,
        }
    }

    /// Prints a line of data on stdout.
    pub fn line(&self, text: &str) {
        if !self.quiet || self.json {
            write_stdout(text);
        }
    }

    /// Prints a JSON object (one line) on stdout.
    pub fn json(&self, v: serde_json::Value) {
        write_stdout(&v.to_string());
    }

    /// Reports an error on stderr (and as JSON on stdout with `--json`).
    pub fn error(&self, e: &anyhow::Error) {
        self.finish_progress();
        let text = error_text(e);
        if self.json {
            self.json(serde_json::json!({"event": "error", "message": text}));
        }
        eprintln!("strata: error: {text}");
    }

    /// True when a progress bar is drawn.
    pub fn has_bar(&self) -> bool {
        self.bar.is_some()
    }

    pub fn finish_progress(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl strata_repo::Progress for Output {
    fn phase(&self, name: &str, total: Option<u64>) {
        if let Some(b) = &self.bar {
            b.set_draw_target(ProgressDrawTarget::stderr());
            b.enable_steady_tick(Duration::from_millis(200));
            b.reset();
            match total {
                Some(t) => {
                    b.set_length(t);
                    b.set_style(bar_style());
                }
                None => {
                    b.unset_length();
                    b.set_style(
                        ProgressStyle::with_template(
                            "{msg:>8} {spinner} {bytes} {binary_bytes_per_sec} {elapsed}",
                        )
                        .expect("template"),
                    );
                }
            }
            b.set_message(name.to_string());
        }
        if let Some(p) = &self.plain {
            let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
            *p = Plain {
                last: Instant::now(),
                done: 0,
                total,
                phase: name.to_string(),
            };
        }
    }

    fn total(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.set_length(bytes);
            b.set_style(bar_style());
        }
        if let Some(p) = &self.plain {
            p.lock().unwrap_or_else(|e| e.into_inner()).total = Some(bytes);
        }
    }

    fn advance(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
        if let Some(p) = &self.plain {
            let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
            p.done += bytes;
            if p.last.elapsed() >= Duration::from_secs(5) {
                let total = p
                    .total
                    .map(|t| format!(" of {}", human(t)))
                    .unwrap_or_default();
                eprintln!("strata: {} {}{total}", p.phase, human(p.done));
                p.last = Instant::now();
            }
        }
    }

    fn warning(&self, path: &str, message: &str) {
        if self.json {
            self.json(serde_json::json!({"event": "warning", "path": path, "message": message}));
        } else if !self.quiet {
            let text = format!("strata: warning: {path}: {message}");
            match &self.bar {
                Some(b) => b.println(text),
                None => eprintln!("{text}"),
            }
        }
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg:>8} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .expect("template")
    .progress_chars("=> ")
}

/// Bytes for people: `1.5 GiB`.
pub fn human(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}

/// A rate in MB/s.
pub fn rate(bytes: u64, d: Duration) -> String {
    let s = d.as_secs_f64().max(1e-6);
    format!("{:.1} MB/s", bytes as f64 / s / 1e6)
}

/// An error and its causes, each once: strata's errors already show their
/// source in their own message, so a cause whose text ends the message so
/// far is not repeated.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if text.is_empty() {
            text = c;
        } else if !text.ends_with(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = std::io::Error::other("attempt to write a readonly database");
        let e = anyhow::Error::new(io).context("catalog: attempt to write a readonly database");
        assert_eq!(
            super::error_text(&e),
            "catalog: attempt to write a readonly database"
        );
        let e = anyhow::Error::new(std::io::Error::other("disk full")).context("saving /p");
        assert_eq!(super::error_text(&e), "saving /p: disk full");
    }
}

//! Progress bars while reading large captures: on a terminal only (stderr), never in piped
//! output, one bar per file (several files are read in parallel), driven by bytes read.
//! Colour follows `--color` and the NO_COLOR convention (no-color.org).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Files smaller than this are read before a bar would be worth drawing.
pub const MIN_BYTES: u64 = 4 << 20;

static ENABLED: AtomicBool = AtomicBool::new(false);
static COLOR: AtomicBool = AtomicBool::new(false);
static MULTI: OnceLock<MultiProgress> = OnceLock::new();

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Decides once, from the command line and the environment, whether bars are drawn and in
/// colour. `no_color` is whether NO_COLOR is set to a non-empty value.
pub fn decide(choice: ColorChoice, stderr_is_terminal: bool, no_color: bool) -> (bool, bool) {
    let color = match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => stderr_is_terminal && !no_color,
    };
    (stderr_is_terminal, color)
}

/// Called by the command line before any capture is read.
pub fn configure(choice: ColorChoice) {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let (enabled, color) = decide(choice, std::io::stderr().is_terminal(), no_color);
    ENABLED.store(enabled, Ordering::Relaxed);
    COLOR.store(color, Ordering::Relaxed);
}

/// A bar for one file of `total` bytes (None for compressed input, whose decompressed size is
/// unknown: a spinner with the bytes read).
pub fn for_file(name: &str, total: Option<u64>, file_bytes: u64) -> Option<ProgressBar> {
    if !ENABLED.load(Ordering::Relaxed) || file_bytes < MIN_BYTES {
        return None;
    }
    let multi = MULTI.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
    let color = COLOR.load(Ordering::Relaxed);
    let bar = match total {
        Some(t) => {
            let template = if color {
                "{prefix:.bold} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"
            } else {
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"
            };
            ProgressBar::new(t).with_style(
                ProgressStyle::with_template(template)
                    .expect("valid template")
                    .progress_chars("=> "),
            )
        }
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template(
                "{prefix} {spinner} {bytes} (decompressed) {bytes_per_sec}",
            )
            .expect("valid template"),
        ),
    };
    let bar = multi.add(bar);
    bar.set_prefix(name.to_string());
    Some(bar)
}

//! Where `warm` reports as it goes: a bar per image on a terminal (`indicatif`), one plain line
//! per manifest, blob and image otherwise (logs, CI). Both write to stderr; the summary goes to
//! stdout.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Event, Progress};
use crate::cache::catalog::human_bytes;

/// The reporter for this process: bars if stderr is a terminal, lines otherwise.
pub fn for_stderr() -> Box<dyn Progress> {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        Box::new(Bars::new())
    } else {
        Box::new(Lines::new(Box::new(std::io::stderr())))
    }
}

/// Plain lines, one per manifest, blob and image.
pub struct Lines {
    out: Mutex<Box<dyn std::io::Write + Send>>,
}

impl Lines {
    pub fn new(out: Box<dyn std::io::Write + Send>) -> Lines {
        Lines {
            out: Mutex::new(out),
        }
    }
}

fn verdict(cached: bool) -> &'static str {
    if cached { "cached " } else { "fetched" }
}

fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

impl Progress for Lines {
    fn event(&self, event: Event<'_>) {
        let line = match event {
            Event::ImageStarted { image } => format!("{image}: warming"),
            Event::Planned {
                image,
                blobs,
                bytes,
            } => format!("{image}: {blobs} blobs, {}", human_bytes(bytes)),
            Event::Manifest {
                image,
                digest,
                cached,
            } => format!("{image}: manifest {} {}", verdict(cached), short(digest)),
            Event::BlobBytes { .. } => return,
            Event::BlobDone {
                image,
                digest,
                size,
                cached,
            } => format!(
                "{image}: blob     {} {} ({})",
                verdict(cached),
                short(digest),
                human_bytes(size)
            ),
            Event::ImageDone { summary } => match &summary.error {
                Some(e) => format!("{}: FAILED: {e}", summary.image),
                None => format!(
                    "{}: done: fetched {} ({}), already cached {} ({})",
                    summary.image,
                    summary.blobs_fetched,
                    human_bytes(summary.bytes_fetched),
                    summary.blobs_cached,
                    human_bytes(summary.bytes_cached)
                ),
            },
        };
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{line}");
    }
}

/// A progress bar per image on stderr.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn new() -> Bars {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, image: &str) -> Option<ProgressBar> {
        self.bars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(image)
            .cloned()
    }
}

impl Progress for Bars {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::ImageStarted { image } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(image.to_owned());
                bar.set_message("manifests");
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
                self.bars
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(image.to_owned(), bar);
            }
            Event::Planned { image, bytes, .. } => {
                if let Some(bar) = self.bar(image) {
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    bar.set_length(bytes);
                    bar.set_message("");
                }
            }
            Event::Manifest { image, digest, .. } => {
                if let Some(bar) = self.bar(image) {
                    bar.set_message(format!("manifest {}", short(digest)));
                }
            }
            Event::BlobBytes { image, bytes } => {
                if let Some(bar) = self.bar(image) {
                    bar.inc(bytes);
                }
            }
            Event::BlobDone {
                image,
                size,
                cached,
                ..
            } => {
                if cached && let Some(bar) = self.bar(image) {
                    bar.inc(size);
                }
            }
            Event::ImageDone { summary } => {
                let bar = self
                    .bars
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&summary.image);
                if let Some(bar) = bar {
                    let message = match &summary.error {
                        Some(e) => format!("FAILED: {e}"),
                        None => format!(
                            "fetched {}, already cached {}",
                            human_bytes(summary.bytes_fetched),
                            human_bytes(summary.bytes_cached)
                        ),
                    };
                    bar.set_style(
                        ProgressStyle::with_template("{prefix} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    bar.finish_with_message(message);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warm::ImageSummary;

    /// Every event, in the order a warm sends them, on both reporters (bars draw nowhere here).
    #[test]
    fn reporters_take_a_whole_run() {
        let done = ImageSummary {
            image: "quay.io/org/app:1".into(),
            blobs_fetched: 1,
            bytes_fetched: 10,
            blobs_cached: 1,
            bytes_cached: 5,
            ..ImageSummary::default()
        };
        let failed = ImageSummary {
            image: "quay.io/org/gone:1".into(),
            error: Some("the proxy answered 404".into()),
            ..ImageSummary::default()
        };
        let bars = Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
            bars: Mutex::new(HashMap::new()),
        };
        let written = std::sync::Arc::new(Mutex::new(Vec::new()));
        struct Sink(std::sync::Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::new(Box::new(Sink(written.clone())));
        for reporter in [&bars as &dyn Progress, &lines] {
            let image = done.image.as_str();
            reporter.event(Event::ImageStarted { image });
            reporter.event(Event::Manifest {
                image,
                digest: "sha256:0123456789abcdef",
                cached: false,
            });
            reporter.event(Event::Planned {
                image,
                blobs: 2,
                bytes: 15,
            });
            reporter.event(Event::BlobBytes { image, bytes: 10 });
            reporter.event(Event::BlobDone {
                image,
                digest: "sha256:aa",
                size: 10,
                cached: false,
            });
            reporter.event(Event::BlobDone {
                image,
                digest: "sha256:bb",
                size: 5,
                cached: true,
            });
            reporter.event(Event::ImageDone { summary: &done });
            reporter.event(Event::ImageStarted {
                image: &failed.image,
            });
            reporter.event(Event::ImageDone { summary: &failed });
            // Events for an image it does not know are ignored.
            reporter.event(Event::BlobBytes {
                image: "unknown",
                bytes: 1,
            });
        }
        assert!(
            bars.bars.lock().unwrap().is_empty(),
            "finished bars are dropped"
        );
    }
}

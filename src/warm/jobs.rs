//! Warm jobs of the admin API (`POST /admin/warm`, `GET /admin/warm`): each runs in the background
//! against the proxy's own plain listener, and its progress is kept here for anyone to read. The
//! last [`KEEP`] jobs are kept.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::{Credentials, Event, ImageSummary, Options, Progress};
use crate::registry::image::ImageRef;
use crate::registry::manifest::Platform;

/// Jobs remembered (running ones included).
const KEEP: usize = 20;

/// The proxy's warm jobs.
pub struct Jobs {
    /// Where the proxy's plain listener is reached from the proxy itself.
    own: SocketAddr,
    next: AtomicU64,
    jobs: Mutex<VecDeque<Arc<Job>>>,
}

/// One job's state, as `GET /admin/warm` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: u64,
    /// `running` or `done`.
    pub status: &'static str,
    pub started_at: u64,
    pub finished_at: Option<u64>,
    pub platform: Option<String>,
    pub failed: usize,
    pub images: Vec<ImageView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageView {
    pub image: String,
    /// `queued`, `running`, `done` or `failed`.
    pub status: &'static str,
    pub blobs: u64,
    pub blobs_done: u64,
    /// Declared bytes of its blobs, and bytes done so far (downloaded or found cached).
    pub bytes: u64,
    pub bytes_done: u64,
    pub summary: Option<ImageSummary>,
}

struct Job {
    state: Mutex<JobView>,
}

impl Jobs {
    /// `listen`: the plain listener as bound; an unspecified address is reached over loopback.
    pub fn new(listen: SocketAddr) -> Jobs {
        let mut own = listen;
        if own.ip().is_unspecified() {
            own.set_ip(match own {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        Jobs {
            own,
            next: AtomicU64::new(1),
            jobs: Mutex::new(VecDeque::new()),
        }
    }

    /// Every job kept, newest first.
    pub fn list(&self) -> Vec<JobView> {
        lock(&self.jobs)
            .iter()
            .rev()
            .map(|job| lock(&job.state).clone())
            .collect()
    }

    /// Starts warming `images` in the background (with the requester's credentials, if client
    /// authentication is on); the job's id.
    pub fn start(
        self: &Arc<Self>,
        images: Vec<ImageRef>,
        platform: Option<Platform>,
        credentials: Option<Credentials>,
        timeout: Duration,
    ) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let job = Arc::new(Job {
            state: Mutex::new(JobView {
                id,
                status: "running",
                started_at: crate::cache::unix_now(),
                finished_at: None,
                platform: platform.as_ref().map(ToString::to_string),
                failed: 0,
                images: images
                    .iter()
                    .map(|i| ImageView {
                        image: i.to_string(),
                        status: "queued",
                        blobs: 0,
                        blobs_done: 0,
                        bytes: 0,
                        bytes_done: 0,
                        summary: None,
                    })
                    .collect(),
            }),
        });
        {
            let mut jobs = lock(&self.jobs);
            jobs.push_back(job.clone());
            // Drop the oldest finished jobs beyond the limit.
            while jobs.len() > KEEP {
                match jobs.iter().position(|j| lock(&j.state).status != "running") {
                    Some(i) => {
                        jobs.remove(i);
                    }
                    None => break,
                }
            }
        }
        let options = Options {
            proxy: self.own.to_string(),
            platform,
            credentials,
            timeout,
        };
        tokio::spawn(async move {
            let summary = super::warm(&options, &images, job.as_ref()).await;
            let mut state = lock(&job.state);
            state.status = "done";
            state.failed = summary.failed();
            state.finished_at = Some(crate::cache::unix_now());
        });
        id
    }
}

impl Job {
    fn image<F: FnOnce(&mut ImageView)>(&self, image: &str, f: F) {
        let mut state = lock(&self.state);
        if let Some(view) = state
            .images
            .iter_mut()
            .find(|v| v.image == image && v.status != "done" && v.status != "failed")
        {
            f(view);
        }
    }
}

impl Progress for Job {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::ImageStarted { image } => self.image(image, |v| v.status = "running"),
            Event::Planned {
                image,
                blobs,
                bytes,
            } => self.image(image, |v| {
                v.blobs = blobs;
                v.bytes = bytes;
            }),
            Event::Manifest { .. } => {}
            Event::BlobBytes { image, bytes } => self.image(image, |v| v.bytes_done += bytes),
            Event::BlobDone {
                image,
                size,
                cached,
                ..
            } => self.image(image, |v| {
                v.blobs_done += 1;
                if cached {
                    v.bytes_done += size;
                }
            }),
            Event::ImageDone { summary } => self.image(&summary.image, |v| {
                v.status = if summary.error.is_some() {
                    "failed"
                } else {
                    "done"
                };
                v.summary = Some(summary.clone());
            }),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

//! A throttling TCP relay between the proxy and an upstream (`CONNECT_TO`).

use std::io::Read as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Relays TCP connections to `target` byte for byte (TLS passes through untouched), optionally
/// slowing what comes back from the target to a set rate, so that a download stays in flight while
/// a test makes other requests. Stops accepting on drop; open connections end with the proxy's.
pub(crate) struct Relay {
    /// `127.0.0.1:PORT`.
    pub(crate) addr: String,
    shared: std::sync::Arc<RelayShared>,
    accept: Option<std::thread::JoinHandle<()>>,
}

struct RelayShared {
    target: String,
    stop: std::sync::atomic::AtomicBool,
    /// Bytes per second from the target; 0 = as fast as it comes.
    rate: AtomicU64,
    /// The most bytes one connection has carried from the target.
    most_down: AtomicU64,
}

impl Relay {
    /// Starts relaying to `target` (`host:port`, resolved now).
    pub(crate) fn start(target: &str) -> Relay {
        use std::net::ToSocketAddrs as _;
        let resolved = target
            .to_socket_addrs()
            .expect("resolve relay target")
            .next()
            .expect("relay target address");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind relay");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("relay address").to_string();
        let shared = std::sync::Arc::new(RelayShared {
            target: resolved.to_string(),
            stop: std::sync::atomic::AtomicBool::new(false),
            rate: AtomicU64::new(0),
            most_down: AtomicU64::new(0),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            while !s.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || relay_connection(client, &s));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => break,
                }
            }
        });
        Relay {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// From now on, at most `bytes_per_sec` per connection from the target.
    pub(crate) fn throttle(&self, bytes_per_sec: u64) {
        self.shared.rate.store(bytes_per_sec, Ordering::Relaxed);
    }

    /// Full speed again.
    pub(crate) fn release(&self) {
        self.shared.rate.store(0, Ordering::Relaxed);
    }

    /// The most bytes one connection has carried from the target so far.
    pub(crate) fn most_down(&self) -> u64 {
        self.shared.most_down.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.release();
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn relay_connection(client: std::net::TcpStream, s: &RelayShared) {
    use std::io::Write as _;
    use std::net::Shutdown;
    let _ = client.set_nonblocking(false);
    let Ok(upstream) = std::net::TcpStream::connect(&s.target) else {
        return;
    };
    let (Ok(mut client_r), Ok(mut upstream_w)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_r, &mut upstream_w);
        let _ = upstream_w.shutdown(Shutdown::Write);
    });
    let (mut upstream_r, mut client_w) = (upstream, client);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match upstream_r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if client_w.write_all(&buf[..n]).is_err() {
            break;
        }
        total += n as u64;
        s.most_down.fetch_max(total, Ordering::Relaxed);
        if let Some(nanos) = (n as u64 * 1_000_000_000).checked_div(s.rate.load(Ordering::Relaxed))
        {
            std::thread::sleep(Duration::from_nanos(nanos));
        }
    }
    let _ = client_w.shutdown(Shutdown::Both);
    let _ = upstream_r.shutdown(Shutdown::Both);
    let _ = up.join();
}

//! registry-proxy: a caching proxy for container registries.
//!
//! `main.rs` parses the configuration and calls [`Proxy::bind`] then [`Proxy::run`]; tests do the
//! same on `127.0.0.1:0`. See `ARCHITECTURE.md` for the request flow.

pub mod access;
pub mod body;
pub mod cache;
pub mod cli;
pub mod config;
pub mod listener;
pub mod peer;
pub mod registry;
pub mod secret;
pub mod serve;
pub mod setup;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod warm;
pub mod zero_copy;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::Config;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Cache(#[from] cache::CacheError),
    #[error("{0}")]
    Trust(#[from] upstream::TrustError),
    #[error("STORAGE: {0}")]
    Storage(#[from] cache::StoreError),
    #[error("PROXY_HTPASSWD: {0}")]
    Users(#[from] access::htpasswd::HtpasswdError),
    #[error("TLS_CLIENT_CA_FILE: {0}")]
    ClientCa(#[from] access::identity::IdentityError),
    #[error("token key in CA_DIR: {0}")]
    TokenKey(#[from] access::token::TokenError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A proxy bound to its port, ready to run.
/// Loads the configuration again (from the same flags, environment and files) for a reload.
pub type Reloader = Box<dyn Fn() -> Result<Config, config::ConfigError> + Send + Sync>;

pub struct Proxy {
    state: Arc<serve::State>,
    listener: TcpListener,
    /// The optional TLS listener for mirror mode (`TLS_LISTEN`) and its acceptor.
    tls_listener: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    /// `MAX_CONNECTIONS`, shared by both listeners.
    limit: Arc<listener::ConnectionLimit>,
    /// The peer port (`PEER_LISTEN`) and the replicas' view, with `PEERS`.
    peer_listener: Option<(TcpListener, Arc<peer::Peers>)>,
    /// What SIGHUP runs to read the configuration again; `None`: SIGHUP is only logged.
    reloader: Option<Reloader>,
}

impl Proxy {
    /// Opens the CA and the cache, builds the upstream client and binds the listener.
    pub async fn bind(config: Config) -> Result<Proxy, StartError> {
        let ca = tls::CertAuthority::load_or_create_with(
            &config.ca_dir,
            config.ca_key_passphrase.as_ref(),
        )?;
        let limits = cache::Limits {
            max_size: config.cache_max_size,
            inactive: config.cache_inactive,
            min_free: config.cache_min_free,
        };
        let cache_dir = config.cache_dir.clone();
        let cache = tokio::task::spawn_blocking(move || cache::Cache::open(&cache_dir, limits))
            .await
            .map_err(|e| cache::CacheError::Io {
                path: config.cache_dir.clone(),
                source: std::io::Error::other(e),
            })??;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let tls_listener = match &config.tls_listen {
            None => None,
            Some(tls) => {
                let certified = match &tls.cert_files {
                    Some((cert, key)) => tls::load_certified_key(cert, key)?,
                    None => ca.mint(&tls.names)?.0,
                };
                let clients = match &config.tls_client_ca_file {
                    Some(path) => Some(access::identity::client_verifier(path)?),
                    None => None,
                };
                let server_config = ca.listener_config(certified, clients)?;
                let listener =
                    TcpListener::bind(tls.addr)
                        .await
                        .map_err(|source| StartError::Listen {
                            addr: tls.addr,
                            source,
                        })?;
                Some((listener, tokio_rustls::TlsAcceptor::from(server_config)))
            }
        };
        // The policy protects the listeners as bound (port 0 becomes a real port).
        let own = std::iter::once(listener.local_addr().unwrap_or(config.listen))
            .chain(tls_listener.as_ref().and_then(|(l, _)| l.local_addr().ok()))
            .collect();
        let policy = Arc::new(access::tunnel::TunnelPolicy::new(
            config.tunnel_allow.clone(),
            own,
        ));
        let cache = match &config.storage {
            config::Storage::Disk => cache,
            config::Storage::S3(s3) => {
                let http = cache::store::HyperConnector::for_config(&config, s3, policy.clone())?;
                let bucket = cache::store::S3Store::new(s3, http)?;
                tracing::info!(bucket = %s3.bucket, prefix = %s3.prefix, "objects shared through an object store, the local disk in front");
                cache
                    .with_bucket(Arc::new(bucket))
                    .with_collector(cache::gc::GcSettings::new(s3, config.cache_inactive))
            }
        };
        let metrics = Arc::new(telemetry::Metrics::new(
            config.log_format == config::LogFormat::Json,
            &config.registries,
        ));
        metrics.sample();
        let upstream = upstream::Upstream::new(&config, policy, metrics.clone())?;
        let limit = Arc::new(listener::ConnectionLimit::new(config.max_connections));
        let users = match &config.proxy_htpasswd {
            Some(path) => Some(Arc::new(access::identity::Users::load(path)?)),
            None => None,
        };
        if users.is_none() && config.tls_client_ca_file.is_none() && !config.access.is_default() {
            tracing::warn!(
                "[[access]] rules are set but client authentication is off (PROXY_HTPASSWD, TLS_CLIENT_CA_FILE): every client is anonymous, so only entries naming `anonymous` let anyone in"
            );
        }
        let tokens = access::token::TokenKey::load_or_create(&config.ca_dir)?;
        let verifier = access::verify::Verifier::new(config.auth_cache_ttl);
        let peer_listener = match &config.peers {
            None => None,
            Some(settings) => {
                let listener = TcpListener::bind(settings.listen).await.map_err(|source| {
                    StartError::Listen {
                        addr: settings.listen,
                        source,
                    }
                })?;
                Some((listener, peer::Peers::new(settings)))
            }
        };
        let live = std::sync::RwLock::new(Arc::new(config.clone()));
        let warm_jobs = Arc::new(warm::Jobs::new(
            listener.local_addr().unwrap_or(config.listen),
        ));
        let zero_copy = zero_copy::ZeroCopy::new(config.zero_copy, metrics.clone());
        let state = Arc::new(serve::State {
            live,
            config,
            cache,
            upstream,
            ca,
            metrics,
            users,
            tokens,
            verifier,
            peers: peer_listener.as_ref().map(|(_, peers)| peers.clone()),
            opened_tokens: serve::access::OpenedTokens::default(),
            warm_jobs,
            zero_copy,
        });
        Ok(Proxy {
            state,
            listener,
            tls_listener,
            limit,
            peer_listener,
            reloader: None,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The TLS listener's address, if `TLS_LISTEN` is set.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls_listener
            .as_ref()
            .and_then(|(l, _)| l.local_addr().ok())
    }

    /// Serves until the future is dropped; expires unused cache entries periodically.
    /// Sets what SIGHUP runs to read the configuration again (the binary loads it from the same
    /// flags, environment and files it started with).
    pub fn set_reloader(&mut self, reloader: Reloader) {
        self.reloader = Some(reloader);
    }

    pub async fn run(self) {
        if let Some(users) = &self.state.users {
            // Also reloads PROXY_HTPASSWD when the file changes, without a signal.
            users.clone().spawn_reloader();
        }
        let _hangup = AbortOnDrop(tokio::spawn(reload_on_hangup(
            self.state.clone(),
            self.reloader,
        )));
        let state = self.state.clone();
        // These tasks end with this future, also when it is dropped rather than finished.
        let _housekeeping = AbortOnDrop(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
            loop {
                tick.tick().await;
                let s = state.clone();
                let _ = tokio::task::spawn_blocking(move || s.cache.evict()).await;
            }
        }));
        let _peers = self.peer_listener.map(|(listener, peers)| {
            peers.spawn_prober();
            AbortOnDrop(tokio::spawn(peer::accept_loop(
                self.state.clone(),
                peers,
                listener,
                Arc::new(listener::ConnectionLimit::new(
                    self.state.config.max_connections,
                )),
            )))
        });
        // The status page's per-minute history (its first sample was taken by `bind`).
        let metrics = self.state.metrics.clone();
        let _sampling = AbortOnDrop(tokio::spawn(async move {
            let minute = std::time::Duration::from_secs(60);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + minute, minute);
            loop {
                tick.tick().await;
                metrics.sample();
            }
        }));
        let _tls = self.tls_listener.map(|(listener, acceptor)| {
            AbortOnDrop(tokio::spawn(listener::accept_loop(
                self.state.clone(),
                listener,
                Some(acceptor),
                self.limit.clone(),
            )))
        });
        listener::accept_loop(self.state, self.listener, None, self.limit).await;
    }
}

/// SIGHUP re-reads the settings that can change without a restart — central credentials
/// (`AUTH_REGISTRIES`, `AUTH_REGISTRIES_FILE`), access rules and per-registry auth modes of the
/// config file — and logs what it did; `PROXY_HTPASSWD` is reloaded by its own watcher on the same
/// signal. A configuration that no longer loads is logged and the running one kept.
async fn reload_on_hangup(state: Arc<serve::State>, reloader: Option<Reloader>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGHUP");
            return;
        }
    };
    while hangup.recv().await.is_some() {
        let Some(reload) = &reloader else {
            tracing::info!("SIGHUP: no configuration source to re-read in this process");
            continue;
        };
        match reload() {
            Ok(config) => {
                let credentials = config.credentials.len();
                let warnings = config.warnings.clone();
                let restart = state.reload(config);
                for warning in warnings {
                    tracing::warn!("{warning}");
                }
                tracing::info!(
                    credentials,
                    "SIGHUP: configuration reloaded (central credentials, access rules, registry auth modes)"
                );
                if !restart.is_empty() {
                    tracing::warn!(
                        settings = %restart.join(", "),
                        "SIGHUP: these settings changed but take effect only after a restart"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP: the configuration does not load; keeping the running one")
            }
        }
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

//! Connecting to upstreams: DNS (with `CONNECT_TO` overrides and `DISABLE_IPV6`), TCP with the
//! connect timeout, then TLS with system roots plus `UPSTREAM_CA_FILE` (or no verification when
//! `VERIFY_SSL=false`), offering HTTP/2 and HTTP/1.1 by ALPN.
//!
//! Configured registries (Docker Hub, `REGISTRIES`) and `CONNECT_TO` targets are the operator's
//! own naming and are dialled as named. Every other target — a `MIRROR_ANY` registry, a redirect to
//! another host, a token realm — goes through the tunnel policy (`TUNNEL_ALLOW`): the name is
//! resolved once and only an address the policy allows is dialled. A refusal is an `io::Error` of
//! kind `PermissionDenied` wrapping [`TunnelError::Refused`] (see [`refusal_in`]).

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::access::tunnel::{self, TunnelError, TunnelPolicy};
use crate::config::ConnectTo;

/// Errors while building the TLS client configuration (start-up).
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("UPSTREAM_CA_FILE {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("TLS client configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the rustls client configuration for upstream connections.
pub fn client_tls_config(
    verify: bool,
    extra_roots: Option<&Path>,
) -> Result<ClientConfig, TrustError> {
    let provider = crate::tls::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = if verify {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A system root rustls cannot parse is skipped, as every TLS client does.
            let _ = roots.add(cert);
        }
        if let Some(path) = extra_roots {
            let err = |reason: String| TrustError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| err(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(e.to_string()))?;
            if certs.is_empty() {
                return Err(err("no PEM certificate in the file".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| err(e.to_string()))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A hyper connector for upstream registries and the CDNs they redirect to.
#[derive(Clone)]
pub struct Connector {
    tls: TlsConnector,
    connect_to: Arc<Vec<ConnectTo>>,
    connect_timeout: Duration,
    disable_ipv6: bool,
    /// Guards every target that is neither trusted nor overridden by `CONNECT_TO`.
    policy: Arc<TunnelPolicy>,
    /// `(host, port)` of the configured registries, dialled without the policy.
    /// Invariant: hosts are lower-case, without brackets.
    trusted: Arc<Vec<(String, u16)>>,
}

impl Connector {
    /// `trusted` lists the configured registries' upstream `(host, port)`s.
    pub fn new(
        tls: ClientConfig,
        connect_to: Vec<ConnectTo>,
        connect_timeout: Duration,
        disable_ipv6: bool,
        policy: Arc<TunnelPolicy>,
        trusted: Vec<(String, u16)>,
    ) -> Connector {
        // In the form `tunnel::parse_target` gives URI hosts: lower-case, IP literals canonical.
        let trusted = trusted
            .into_iter()
            .map(|(host, port)| match host.parse::<std::net::IpAddr>() {
                Ok(ip) => (ip.to_string(), port),
                Err(_) => (host.to_ascii_lowercase(), port),
            })
            .collect();
        Connector {
            tls: TlsConnector::from(Arc::new(tls)),
            connect_to: Arc::new(connect_to),
            connect_timeout,
            disable_ipv6,
            policy,
            trusted: Arc::new(trusted),
        }
    }

    async fn connect(self, uri: Uri) -> io::Result<TokioIo<UpstreamStream>> {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("unsupported scheme {other:?}"),
                ));
            }
        };
        let default_port = if https { 443 } else { 80 };
        let authority = uri
            .authority()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URI without host"))?;
        // Not `Uri::port_u16`: it reads an out-of-range port as no port at all.
        let (host, port) =
            tunnel::parse_target(authority.as_str(), Some(default_port)).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("URI authority: {e}"))
            })?;
        let overridden = self
            .connect_to
            .iter()
            .find(|c| c.host.eq_ignore_ascii_case(&host) && c.port == port);
        let (dial_host, dial_port, policy) = match overridden {
            Some(c) => (c.addr.clone(), c.addr_port, None),
            None if self.is_trusted(&host, port) => (host.clone(), port, None),
            None => (host.clone(), port, Some(self.policy.as_ref())),
        };
        let tcp = tunnel::connect(
            policy,
            &dial_host,
            dial_port,
            self.connect_timeout,
            self.disable_ipv6,
        )
        .await
        .map_err(|e| io::Error::new(e.kind(), e))?;
        let _ = tcp.set_nodelay(true);
        if !https {
            return Ok(TokioIo::new(UpstreamStream::Plain(tcp)));
        }
        let name = ServerName::try_from(host.clone()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad TLS name {host:?}: {e}"),
            )
        })?;
        let tls = tokio::time::timeout(self.connect_timeout, self.tls.connect(name, tcp))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("TLS handshake with {host} timed out"),
                )
            })??;
        Ok(TokioIo::new(UpstreamStream::Tls(Box::new(tls))))
    }

    /// True for a configured registry's `host:port`.
    fn is_trusted(&self, host: &str, port: u16) -> bool {
        self.trusted
            .iter()
            .any(|(h, p)| *p == port && h.eq_ignore_ascii_case(host))
    }
}

/// The policy refusal inside a client error, if that is what it is (the connector's `io::Error`
/// is somewhere in the chain of causes).
pub fn refusal_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a TunnelError> {
    let mut current: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(tunnel) = err.downcast_ref::<TunnelError>() {
            return matches!(tunnel, TunnelError::Refused { .. }).then_some(tunnel);
        }
        if let Some(tunnel) = err
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<TunnelError>())
        {
            return matches!(tunnel, TunnelError::Refused { .. }).then_some(tunnel);
        }
        current = err.source();
    }
    None
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<UpstreamStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}

/// A connection to an upstream, plain or TLS.
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match self {
            UpstreamStream::Plain(_) => Connected::new(),
            UpstreamStream::Tls(tls) => {
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    Connected::new().negotiated_h2()
                } else {
                    Connected::new()
                }
            }
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// `VERIFY_SSL=false`: accept any upstream certificate (signatures are still checked).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

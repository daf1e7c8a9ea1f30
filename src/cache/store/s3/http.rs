//! The S3 client's HTTP: `object_store` sends its requests through this hyper client, which dials
//! with the upstream connector (`CONNECT_TO`, `DISABLE_IPV6`, the connect timeout) and speaks TLS
//! with the proxy's rustls configuration (system roots plus `UPSTREAM_CA_FILE`, `VERIFY_SSL`), so
//! the binary carries one TLS stack.

use std::io;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody,
    HttpResponse, HttpResponseBody, HttpService,
};

use std::sync::Arc;

use crate::access::tunnel::TunnelPolicy;
use crate::config::{Config, S3Settings};
use crate::upstream::TrustError;
use crate::upstream::connector::{Connector, client_tls_config};

/// Longest wait for the head of the bucket's response.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds the S3 client's HTTP client.
#[derive(Clone)]
pub struct HyperConnector {
    connector: Connector,
    /// Longest wait for a response's head.
    timeout: Duration,
}

impl HyperConnector {
    pub fn new(connector: Connector, timeout: Duration) -> HyperConnector {
        HyperConnector { connector, timeout }
    }

    /// The connector for the bucket in `s3`, with the upstream trust settings of `config`. The
    /// bucket's endpoint is the operator's own naming, dialled without the tunnel policy (which
    /// still guards anything else, as for upstreams).
    pub fn for_config(
        config: &Config,
        s3: &S3Settings,
        policy: Arc<TunnelPolicy>,
    ) -> Result<HyperConnector, TrustError> {
        let tls = client_tls_config(config.verify_ssl, config.upstream_ca_file.as_deref())?;
        let trusted = match &s3.endpoint {
            Some(endpoint) => endpoint
                .parse::<http::Uri>()
                .ok()
                .and_then(|uri| {
                    let host = uri.host()?.trim_matches(['[', ']']).to_owned();
                    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                        Some("http") => 80,
                        _ => 443,
                    });
                    Some(vec![
                        (host.clone(), port),
                        (format!("{}.{host}", s3.bucket), port),
                    ])
                })
                .unwrap_or_default(),
            None => vec![
                (format!("s3.{}.amazonaws.com", s3.region), 443),
                (format!("{}.s3.{}.amazonaws.com", s3.bucket, s3.region), 443),
            ],
        };
        let connector = Connector::new(
            tls,
            config.connect_to.clone(),
            config.timeouts.proxy_connect,
            config.disable_ipv6,
            policy,
            trusted,
        );
        Ok(HyperConnector::new(connector, RESPONSE_TIMEOUT))
    }
}

impl std::fmt::Debug for HyperConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperConnector")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpConnector for HyperConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let client = Client::builder(TokioExecutor::new()).build(self.connector.clone());
        Ok(HttpClient::new(HyperService {
            client,
            timeout: self.timeout,
        }))
    }
}

struct HyperService {
    client: Client<Connector, HttpRequestBody>,
    timeout: Duration,
}

impl std::fmt::Debug for HyperService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperService")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl HttpService for HyperService {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let response = match tokio::time::timeout(self.timeout, self.client.request(request)).await
        {
            Err(_) => {
                return Err(HttpError::new(
                    HttpErrorKind::Timeout,
                    io::Error::new(io::ErrorKind::TimedOut, "no response in time"),
                ));
            }
            Ok(Err(e)) => {
                let kind = if e.is_connect() {
                    HttpErrorKind::Connect
                } else {
                    HttpErrorKind::Request
                };
                return Err(HttpError::new(kind, e));
            }
            Ok(Ok(response)) => response,
        };
        let (parts, body) = response.into_parts();
        let body = body.map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e));
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body)))
    }
}

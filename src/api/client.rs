//! The Kubernetes client of the long-running modes: kube's own layers
//! (base URL, authentication, extra headers, retries of 429/503/504, the
//! configured timeouts) over an HTTP client whose pool of idle connections
//! is bounded.
//!
//! kube builds its HTTP client with hyper-util's pool defaults: any number
//! of idle connections per host, and no timer, so an idle connection is
//! never closed by the client. Requests over HTTP/1.1 take one connection
//! each, and a cold start sends up to [`crate::provision::create::CONCURRENT_OFFERS`]
//! creates, as many LocalDisk writes and its Events at once: measured on a
//! 200-device start, 17 connections beside the five watches then stayed
//! open and idle for the life of the process, about 45 KB of buffers,
//! dispatch channel and task each here, and one socket each on the API
//! server, on every node. Here at most [`IDLE_CONNECTIONS_KEPT`] stay, each
//! closed after [`IDLE_CONNECTION_TIMEOUT`] unused, so a quiet node holds
//! its watches and nothing else.

use std::time::Duration;

use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

/// Idle connections kept for the next requests: a new device's create, its
/// Event and its LocalDisk writes go out together, without waiting for a
/// connection.
pub const IDLE_CONNECTIONS_KEPT: usize = 4;

/// How long an unused connection stays open: Go's `net/http` default
/// (`IdleConnTimeout`, 90 s), which client-go's transport keeps.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(90);

/// The client of `config`, as kube would build it but with the bounded
/// pool above. A configuration with a proxy gets kube's own client (and its
/// error: this build has no proxy support).
pub fn with_bounded_pool(config: kube::Config) -> Result<kube::Client, kube::Error> {
    if config.proxy_url.is_some() {
        return kube::Client::try_from(config);
    }
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    let tls = config.rustls_https_connector_with_connector(tcp)?;
    let mut connector = TimeoutConnector::new(tls);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http = HttpClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(IDLE_CONNECTIONS_KEPT)
        .pool_idle_timeout(IDLE_CONNECTION_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(http);
    Ok(kube::Client::new(service, config.default_namespace))
}

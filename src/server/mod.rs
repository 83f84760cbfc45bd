//! Serves the pipeline over HTTP/1.1 and h2c (hyper 1, the protocol peeked from the first
//! bytes: [`protocol`]), with graceful
//! shutdown (stop accepting, let in-flight requests and streams finish within the grace
//! period, then return) and the defences a public listener needs against slow and idle
//! clients: a header-read timeout, a body-read idle timeout, a keep-alive idle timeout, a
//! bounded set of connections that makes room by closing silent ones first
//! ([`connections`]), and HTTP/2 limits. Only the client's silence counts: a long stream is
//! never cut by these timers.

pub mod connections;
mod error_bodies;
pub mod fd_limit;
pub mod metrics_port;
mod own_head;
mod protocol;
pub mod tls;
pub mod tracked;

use crate::config::Config;
use connections::{Registry, Timeouts};
use hyper::body::Incoming;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracked::{IdleTimeoutBody, Tracked};

/// Binds the listening socket.
pub async fn bind(host: &str, port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind((host, port)).await
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The server's limits on clients (see the README's "Limits and timeouts").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A new connection must complete its first request's headers within this.
    pub header_read_timeout: Duration,
    /// A request body may pause for at most this between chunks.
    pub body_read_timeout: Duration,
    /// A keep-alive connection may sit idle between requests for at most this.
    pub idle_timeout: Duration,
    /// Open client connections at most.
    pub max_connections: usize,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_grace: Duration,
    /// HTTP/2: concurrent streams per connection.
    pub h2_max_streams: u32,
}

impl Limits {
    /// The limits `config` sets (its defaults are the only ones: a key is declared once, in
    /// `config`). Without `--max-client-connections` the cap is what the descriptor limit
    /// `nofile` leaves ([`fd_limit::default_max_connections`]).
    pub fn from_config(config: &Config, nofile: u64) -> Self {
        Self {
            header_read_timeout: config.header_read_timeout,
            body_read_timeout: config.body_read_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: config.max_client_connections.unwrap_or_else(|| {
                fd_limit::default_max_connections(nofile, config.max_connections)
            }),
            shutdown_grace: config.shutdown_timeout,
            h2_max_streams: crate::config::H2_MAX_STREAMS,
        }
    }
}

/// Descriptors assumed when the limit cannot be read (the usual soft limit).
pub const ASSUMED_NOFILE: u64 = 1024;

impl Default for Limits {
    /// The default configuration's limits under this process's descriptor limit as it is
    /// now (the fake Kiro, tests): a process that raised it gets the room it made.
    fn default() -> Self {
        let nofile = fd_limit::current().unwrap_or(ASSUMED_NOFILE);
        Self::from_config(&Config::default(), nofile)
    }
}

/// Request headers at most, in bytes (HTTP/1 read buffer and HTTP/2 header list).
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// HTTP/2 keep-alive ping interval and how long the ping's answer may take.
const H2_PING: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// A response body the server can write.
pub trait ResponseBody:
    http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static
{
}

impl<B> ResponseBody for B where
    B: http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static
{
}

/// A service [`serve`] can serve (the pipeline, the fake Kiro): cloned for each connection.
pub trait Served<B: ResponseBody>:
    tower::Service<
        http::Request<IdleTimeoutBody<Incoming>>,
        Response = http::Response<B>,
        Future: Send + 'static,
        Error: Into<BoxError>,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B: ResponseBody> Served<B> for S where
    S: tower::Service<
            http::Request<IdleTimeoutBody<Incoming>>,
            Response = http::Response<B>,
            Future: Send + 'static,
            Error: Into<BoxError>,
        > + Clone
        + Send
        + 'static
{
}

/// Serves `service` (the aiproxy pipeline, or the fake Kiro) until `shutdown` completes, then
/// drains for at most `limits.shutdown_grace`.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
) where
    S: Served<B>,
    B: ResponseBody,
{
    serve_tls(listener, None, service, shutdown, limits).await;
}

/// [`serve`], over TLS when `tls` is given ([`tls::acceptor`]): the handshake first, then
/// the protocol ALPN chose.
pub async fn serve_tls<S, B>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    service: S,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
) where
    S: Served<B>,
    B: ResponseBody,
{
    let builders = Arc::new(protocol::Builders::new(limits.h2_max_streams, tls));
    let registry = Registry::new(limits.max_connections);
    let timeouts = Timeouts {
        header_read: limits.header_read_timeout,
        idle: limits.idle_timeout,
    };
    let graceful = GracefulShutdown::new();
    let ending = StreamsEnding::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = async { registry.settled().await; listener.accept().await } => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Usually EMFILE: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let slot = match registry.admit() {
                    Ok(slot) => slot,
                    Err(full) => {
                        tracing::warn!(%peer, cap = full.cap, "connection refused: every connection is busy (--max-client-connections)");
                        continue;
                    }
                };
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "TCP_NODELAY not set");
                }
                let watcher = graceful.watcher();
                let task = connection_task(Arc::clone(&builders), stream, peer, slot, service.clone(), ConnectionSettings {
                    timeouts,
                    body_read_timeout: limits.body_read_timeout,
                    ending: ending.clone(),
                }, watcher);
                tokio::spawn(task);
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(
        grace_secs = limits.shutdown_grace.as_secs(),
        "shutting down: finishing in-flight requests"
    );
    // Shortly before the grace runs out, open streams are told to end with an error event
    // (never a silent cut); the rest of the grace lets those events reach the clients.
    let margin = (limits.shutdown_grace / 10).min(Duration::from_secs(1));
    let grace_over = async {
        tokio::time::sleep(limits.shutdown_grace.saturating_sub(margin)).await;
        tracing::warn!("grace period ending; open streams end with an error event");
        ending.0.cancel();
        tokio::time::sleep(margin).await;
    };
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = grace_over => tracing::warn!("grace period over; closing remaining connections"),
    }
}

/// What every connection of one server shares beyond its protocol builders.
struct ConnectionSettings {
    timeouts: Timeouts,
    body_read_timeout: Duration,
    ending: StreamsEnding,
}

/// An accepted connection's task: `service` serves it until it ends, until the watchdog
/// finds the client silent past its timeout, or until it is evicted to make room.
fn connection_task<S, B>(
    builders: Arc<protocol::Builders>,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    slot: connections::Slot,
    service: S,
    settings: ConnectionSettings,
    watcher: hyper_util::server::graceful::Watcher,
) -> impl Future<Output = ()> + Send + 'static
where
    S: Served<B>,
    B: ResponseBody,
{
    let connection = Arc::clone(slot.connection());
    let tracked = Tracked::new(
        service,
        Arc::clone(&connection),
        settings.body_read_timeout,
        settings.ending,
    );
    let service = TowerToHyperService::new(tracked);
    let timeouts = settings.timeouts;
    async move {
        let _slot = slot;
        // Made here, not captured: a captured future is room twice in this one (the
        // capture, and the pinned copy it is moved into).
        let served = builders.serve(stream, service, watcher);
        tokio::pin!(served);
        loop {
            let deadline = connection.deadline(timeouts);
            tokio::select! {
                result = &mut served => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                    break;
                }
                () = connection.evicted() => {
                    tracing::debug!(%peer, "closing a silent or idle connection to make room");
                    break;
                }
                () = sleep_until_or_recheck(deadline, timeouts.idle) => {
                    if connection.deadline(timeouts).is_some_and(|d| d <= tokio::time::Instant::now()) {
                        tracing::debug!(%peer, "closing a connection that stayed silent");
                        break;
                    }
                }
            }
        }
    }
}

/// One server's end-of-grace signal, on every request it serves (in the [`tracked::ServedOn`]
/// extension): cancelled when its shutdown grace period is about to run out, so every open
/// answer of that server ends with its API's error event (see `crate::api`), never a silent
/// cut. Each [`serve`] has its own: another server in the same process (a test, an embedding
/// app) is not affected.
#[derive(Clone, Debug, Default)]
pub struct StreamsEnding(tokio_util::sync::CancellationToken);

impl StreamsEnding {
    /// Completes when the grace period is about to run out.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.0.clone().cancelled_owned()
    }
}

/// Sleeps to `deadline`, or for `recheck` while the connection is busy (no deadline).
async fn sleep_until_or_recheck(deadline: Option<tokio::time::Instant>, recheck: Duration) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => tokio::time::sleep(recheck).await,
    }
}

/// Completes on SIGINT or SIGTERM.
///
/// The handlers are installed when this is called (not when the future is first polled),
/// so a signal that arrives between the "listening" line and the serve loop is not lost to
/// the default action, which would kill the process without flushing its log.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |handler: std::io::Result<tokio::signal::unix::Signal>,
                        name: &'static str| async move {
                match handler {
                    Ok(mut handler) => {
                        handler.recv().await;
                    }
                    Err(error) => {
                        tracing::warn!(%error, signal = name, "cannot listen for the signal");
                        std::future::pending::<()>().await;
                    }
                }
            };
            let (interrupt, terminate) = handlers;
            tokio::select! {
                () = wait(interrupt, "SIGINT") => tracing::info!("SIGINT received"),
                () = wait(terminate, "SIGTERM") => tracing::info!("SIGTERM received"),
            }
        }
        #[cfg(not(unix))]
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's task is memory every open connection holds for its whole life: the
    /// TLS handshake's state and copies of the served future must not be room in it.
    #[tokio::test]
    async fn a_connection_task_is_small() {
        let pipeline = crate::pipeline::build(&Config::mock()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let registry = Registry::new(4);
        let slot = registry.admit().ok().unwrap();
        let graceful = GracefulShutdown::new();
        let settings = ConnectionSettings {
            timeouts: Timeouts {
                header_read: Duration::from_secs(1),
                idle: Duration::from_secs(1),
            },
            body_read_timeout: Duration::from_secs(1),
            ending: StreamsEnding::default(),
        };
        let task = connection_task(
            Arc::new(protocol::Builders::new(100, None)),
            stream,
            peer,
            slot,
            pipeline,
            settings,
            graceful.watcher(),
        );
        // 6.9 KiB when the TLS handshake's state was room in it and the served connection's
        // future was in it twice (a capture, and the pinned copy); 1.5 KiB without.
        let size = std::mem::size_of_val(&task);
        assert!(size <= 2048, "a connection's task takes {size} bytes");
    }
}

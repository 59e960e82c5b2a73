//! The bridge daemon: every route of a configuration file, supervised, with an operations
//! endpoint (`/metrics` in Prometheus format, `/healthz`, `/readyz`) and a graceful shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tributary::{Backend, Error, Result};

use crate::config::{Plan, RoutePlan, Secrets};
use crate::route::{self, CancellationToken, RouteSpec, RouteStats};

/// What the operations endpoint reports.
#[derive(Debug, Default)]
pub struct Health {
    /// Every route has opened its source and sink at least once.
    pub ready: AtomicBool,
    /// Shutting down: not ready any more.
    pub stopping: AtomicBool,
    /// Routes whose last run failed, with the error (shown by `/healthz`). A lock that does
    /// not poison: a panicked route must not take the health endpoint down with it.
    pub failing: parking_lot::Mutex<HashMap<String, String>>,
}

/// A running daemon's routes and counters.
pub struct Running {
    /// Counters per route name.
    pub stats: Vec<(String, Arc<RouteStats>)>,
    /// The operations endpoint's bound address, when enabled.
    pub listening: Option<SocketAddr>,
    health: Arc<Health>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    cancel: CancellationToken,
    connections: Arc<Connections>,
}

/// Installs the Prometheus recorder (once per process) and returns its handle.
fn recorder() -> Option<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
                None
            }
        })
        .clone()
}

/// Backends by URL, shared by the routes that name the same URL. A route that fails has its
/// URLs connected afresh when it reopens: a client can be stuck in a state only a new
/// connection clears (a `file://` directory opened read-only while another process held it).
#[derive(Default)]
struct Connections {
    by_url: tokio::sync::Mutex<HashMap<String, Arc<dyn Backend>>>,
    /// Every backend ever connected, closed at shutdown.
    all: parking_lot::Mutex<Vec<Arc<dyn Backend>>>,
}

impl Connections {
    async fn get(&self, url: &str) -> Result<Arc<dyn Backend>> {
        let mut by_url = self.by_url.lock().await;
        if let Some(backend) = by_url.get(url) {
            return Ok(backend.clone());
        }
        let backend = tributary::connect(url).await?;
        by_url.insert(url.to_string(), backend.clone());
        self.all.lock().push(backend.clone());
        Ok(backend)
    }

    /// The next `get` connects again. Routes still holding the old backend keep it; one no
    /// route holds any more is closed, so a route that keeps failing does not pile up clients.
    async fn forget(&self, urls: &[&str]) {
        let mut removed = Vec::new();
        {
            let mut by_url = self.by_url.lock().await;
            for url in urls {
                removed.extend(by_url.remove(*url));
            }
        }
        for backend in removed {
            let unused = {
                let mut all = self.all.lock();
                // Held by `all` and by `backend` here, nothing else: no route uses it.
                if Arc::strong_count(&backend) == 2 {
                    all.retain(|b| !Arc::ptr_eq(b, &backend));
                    true
                } else {
                    false
                }
            };
            if unused {
                let _ = backend.close().await;
            }
        }
    }
}

/// Starts the operations endpoint and every route. A configuration the backends refuse
/// (an unknown option) fails the start; a server that cannot be reached does not: its routes
/// report unhealthy on `/healthz`, `/readyz` says not ready, and they keep trying.
pub async fn start(plan: Plan) -> Result<Running> {
    let secrets = Arc::new(plan.secrets.clone());
    start_scrubbed(plan, secrets.clone())
        .await
        .map_err(|e| secrets.scrub_error(e))
}

async fn start_scrubbed(plan: Plan, secrets: Arc<Secrets>) -> Result<Running> {
    let metrics = recorder();
    let health = Arc::new(Health::default());
    let cancel = CancellationToken::new();
    let listening = match plan.listen {
        Some(addr) => Some(serve_operations(addr, metrics, health.clone(), cancel.clone()).await?),
        None => None,
    };
    let connections = Arc::new(Connections::default());
    for route in &plan.routes {
        let urls = [
            ("source", Some(&route.source_url)),
            ("sink", Some(&route.sink_url)),
            (
                "dead-letter sink",
                route.dead_letter.as_ref().map(|(u, _)| u),
            ),
        ];
        for (role, url) in urls {
            let Some(url) = url else { continue };
            match connections.get(url).await {
                Ok(_) => {}
                Err(e) if e.kind() == tributary::ErrorKind::Config => {
                    return Err(e.context(format!("route `{}`: {role}", route.name)));
                }
                Err(e) => {
                    let e = secrets.scrub_error(e);
                    tracing::warn!(route = %route.name, role, error = %e, "cannot connect yet; the route will keep trying");
                }
            }
        }
    }

    let mut stats = Vec::new();
    let mut tasks = Vec::new();
    let readiness = Arc::new(Readiness {
        opened: std::sync::atomic::AtomicUsize::new(0),
        total: plan.routes.len(),
    });
    for route in plan.routes {
        let route_stats = Arc::new(RouteStats::default());
        stats.push((route.name.clone(), route_stats.clone()));
        tasks.push(tokio::spawn(supervise(
            route,
            connections.clone(),
            route_stats,
            health.clone(),
            cancel.clone(),
            readiness.clone(),
            secrets.clone(),
        )));
    }
    Ok(Running {
        stats,
        listening,
        health,
        tasks,
        cancel,
        connections,
    })
}

/// The route's backends, connected (or reused), and its spec.
async fn connect_route(route: &RoutePlan, connections: &Connections) -> Result<RouteSpec> {
    let source = connections
        .get(&route.source_url)
        .await
        .map_err(|e| e.context(format!("route `{}`: source", route.name)))?;
    let sink = connections
        .get(&route.sink_url)
        .await
        .map_err(|e| e.context(format!("route `{}`: sink", route.name)))?;
    let dead_letter = match &route.dead_letter {
        Some((url, stream)) => Some((
            connections
                .get(url)
                .await
                .map_err(|e| e.context(format!("route `{}`: dead-letter sink", route.name)))?,
            stream.clone(),
        )),
        None => None,
    };
    Ok(spec(route, source, sink, dead_letter))
}

fn spec(
    route: &RoutePlan,
    source: Arc<dyn Backend>,
    sink: Arc<dyn Backend>,
    dead_letter: Option<(Arc<dyn Backend>, String)>,
) -> RouteSpec {
    let mut spec = RouteSpec::new(
        &route.name,
        source,
        &route.source_stream,
        sink,
        &route.sink_stream,
    );
    spec.group = route.group.clone();
    spec.start = route.start.clone();
    spec.max_batch = route.max_events;
    spec.max_bytes = route.max_bytes;
    spec.linger = route.linger;
    spec.in_flight = route.in_flight;
    spec.retry = route.retry.clone();
    spec.dead_letter = dead_letter;
    spec.keep_key = route.keep_key;
    spec.transform = route.transform.clone();
    spec.source_identity = route.source_identity.clone();
    spec.sink_identity = route.sink_identity.clone();
    spec
}

/// How many routes have opened at least once, of how many.
struct Readiness {
    opened: std::sync::atomic::AtomicUsize,
    total: usize,
}

/// Runs a route until cancelled; a failed route is reported unhealthy and reopened after its
/// longest backoff (what it had not acked is read again from the source).
async fn supervise(
    route: RoutePlan,
    connections: Arc<Connections>,
    stats: Arc<RouteStats>,
    health: Arc<Health>,
    cancel: CancellationToken,
    readiness: Arc<Readiness>,
    secrets: Arc<Secrets>,
) {
    let mut counted = false;
    while !cancel.is_cancelled() {
        let outcome = match connect_route(&route, &connections).await {
            Ok(spec) => match route::open(spec).await {
                Ok(open) => {
                    if !counted {
                        counted = true;
                        if readiness.opened.fetch_add(1, Ordering::SeqCst) + 1 == readiness.total {
                            health.ready.store(true, Ordering::SeqCst);
                        }
                    }
                    health.failing.lock().remove(&route.name);
                    open.run(stats.clone(), cancel.clone()).await
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => break,
            Err(e) => {
                let e = secrets.scrub_error(e);
                tracing::error!(route = %route.name, error = %e, "route failed; reconnecting and reopening after {:?}", route.retry.max_backoff);
                health
                    .failing
                    .lock()
                    .insert(route.name.clone(), e.to_string());
                let mut urls = vec![route.source_url.as_str(), route.sink_url.as_str()];
                if let Some((url, _)) = &route.dead_letter {
                    urls.push(url);
                }
                connections.forget(&urls).await;
                tokio::select! {
                    _ = tokio::time::sleep(route.retry.max_backoff) => {}
                    _ = cancel.cancelled() => break,
                }
            }
        }
    }
}

impl Running {
    /// Stops intake, lets each route finish and ack the batch in hand, closes the backends.
    /// `Err` (timeout) if that takes longer than `deadline`: what was not acked is read again
    /// after a restart.
    pub async fn shutdown(self, deadline: Duration) -> Result<()> {
        self.health.stopping.store(true, Ordering::SeqCst);
        self.cancel.cancel();
        let drained = tokio::time::timeout(deadline, futures::future::join_all(self.tasks)).await;
        let backends = std::mem::take(&mut *self.connections.all.lock());
        for backend in backends {
            let _ = backend.close().await;
        }
        match drained {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::timeout(format!(
                "routes still draining after {deadline:?} (daemon.shutdown_timeout); unacked events will be read again on restart"
            ))),
        }
    }

    /// Whether every route is open.
    pub fn ready(&self) -> bool {
        self.health.ready.load(Ordering::SeqCst)
    }

    /// Routes currently failing, with their last error.
    pub fn failing(&self) -> HashMap<String, String> {
        self.health.failing.lock().clone()
    }
}

/// A minimal HTTP/1.1 server for three GET endpoints; bound before routes start so a bad
/// address fails the start-up, not silently later.
async fn serve_operations(
    addr: SocketAddr,
    metrics: Option<PrometheusHandle>,
    health: Arc<Health>,
    cancel: CancellationToken,
) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::io(
            format!("binding the operations endpoint to {addr} (daemon.listen)"),
            e,
        )
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("operations endpoint address", e))?;
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = tokio::select! {
                _ = cancel.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(_) => continue,
                },
            };
            let metrics = metrics.clone();
            let health = health.clone();
            tokio::spawn(async move {
                // Read the request head (a client may send it in several pieces).
                let mut request = Vec::with_capacity(1024);
                let mut chunk = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
                    match tokio::time::timeout(Duration::from_secs(5), socket.read(&mut chunk))
                        .await
                    {
                        Ok(Ok(n)) if n > 0 => request.extend_from_slice(&chunk[..n]),
                        _ => break,
                    }
                }
                let line = String::from_utf8_lossy(&request);
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, content_type, body) = respond(&path, metrics.as_ref(), &health);
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body.as_bytes()).await;
            });
        }
    });
    Ok(bound)
}

fn respond(
    path: &str,
    metrics: Option<&PrometheusHandle>,
    health: &Health,
) -> (&'static str, &'static str, String) {
    match path {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4",
            metrics.map(|m| m.render()).unwrap_or_default(),
        ),
        "/healthz" => {
            let failing = health.failing.lock();
            if failing.is_empty() {
                ("200 OK", "text/plain", "ok\n".into())
            } else {
                let mut lines: Vec<_> = failing
                    .iter()
                    .map(|(route, error)| format!("route {route}: {error}\n"))
                    .collect();
                lines.sort();
                ("503 Service Unavailable", "text/plain", lines.concat())
            }
        }
        "/readyz" => {
            if health.ready.load(Ordering::SeqCst) && !health.stopping.load(Ordering::SeqCst) {
                ("200 OK", "text/plain", "ready\n".into())
            } else {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    "not ready\n".into(),
                )
            }
        }
        _ => (
            "404 Not Found",
            "text/plain",
            "try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// One line describing a route, with its URLs as written (`${VAR}` references kept) and
/// redacted.
pub fn describe(route: &RoutePlan) -> String {
    format!(
        "route `{}`: {} `{}` (group `{}`) -> {} `{}`{}{}",
        route.name,
        route.source_shown,
        route.source_stream,
        route.group,
        route.sink_shown,
        route.sink_stream,
        route
            .dead_letter
            .as_ref()
            .zip(route.dead_letter_shown.as_ref())
            .map(|((_, s), shown)| format!(", dead letters to {shown} `{s}`"))
            .unwrap_or_default(),
        route
            .transform
            .as_ref()
            .map(|t| format!(", {}", t.summary()))
            .unwrap_or_default()
    )
}

//! The operations endpoint: a minimal HTTP/1.1 server for `/metrics`, `/healthz` and
//! `/readyz`, on tasks of its own so that busy routes never delay it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tributary::{Error, Result};

use super::Health;
use crate::route::CancellationToken;

/// Binds `addr` (before routes start, so a bad address fails the start-up) and serves until
/// `cancel`.
pub(super) async fn serve(
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

const UNAVAILABLE: &str = "503 Service Unavailable";

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
        "/healthz" => match health.healthz() {
            (true, body) => ("200 OK", "text/plain", body),
            (false, body) => (UNAVAILABLE, "text/plain", body),
        },
        "/readyz" => {
            if health.readyz() {
                ("200 OK", "text/plain", "ready\n".into())
            } else {
                (UNAVAILABLE, "text/plain", "not ready\n".into())
            }
        }
        _ => (
            "404 Not Found",
            "text/plain",
            "try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

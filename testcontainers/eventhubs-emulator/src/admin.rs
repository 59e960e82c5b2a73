//! The admin API: what Azure Resource Manager does for a namespace (make and remove event
//! hubs and consumer groups), for test fixtures that need a hub of a given shape on demand.
//!
//! Plain HTTP/1.1 on the AMQP port, served only with `--admin` ([`crate::Config::admin`]). An
//! AMQP client's first bytes are the protocol header `AMQP…`; anything else on a connection is
//! read as one HTTP request, answered, and the connection closed.
//!
//! | request | answer |
//! |---|---|
//! | `GET /hubs` | 200, every hub |
//! | `GET /hubs/NAME` | 200, the hub; 404 |
//! | `PUT /hubs/NAME?partitions=N` | 201, the new hub (N defaults to `--partitions`); 409 when it exists; 400 for a bad name or count |
//! | `DELETE /hubs/NAME` | 204; 404 |
//! | `PUT /hubs/NAME/consumergroups/GROUP` | 201; 409 when it exists; 404 without the hub; 400 for a bad name |
//! | `POST /hubs/NAME/detach-receivers[?partition=N]` | 200, `{"detached": n}`: the hub's receivers (one partition's) force-detached, for tests of a client's recovery; 404 |
//!
//! A hub is `{"name": "orders", "partition_count": 4, "consumer_groups": ["$Default"],
//! "created_at_ms": 1700000000000}`; an error is `{"error": "why"}`. Requests may carry no body
//! beyond [`MAX_BODY`] bytes (it is read and ignored).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::config::HubConfig;
use crate::store::{AdminError, Hub, Namespace, NotFound};

/// Longest request line plus headers.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// Longest body read (and ignored).
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a connection's first bytes are AMQP's protocol header (`AMQP` then the protocol
/// id and version), as opposed to an HTTP request.
pub(crate) fn is_amqp(first: &[u8]) -> bool {
    first.starts_with(b"AMQP")
}

/// A connection whose first bytes were read to choose the protocol: they are read again first.
#[derive(Debug)]
pub(crate) struct Replay<S> {
    first: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Replay<S> {
    pub(crate) fn new(first: Vec<u8>, inner: S) -> Self {
        Replay {
            first,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.first.len() {
            let n = (self.first.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.first[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Answers one HTTP request on `stream` and closes it.
pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    namespace: &Namespace,
    default_partitions: u32,
) {
    let (status, body) =
        match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await {
            Ok(Ok(head)) => handle(&head, namespace, default_partitions),
            Ok(Err(answer)) => answer,
            Err(_) => (408, error_body("the request did not arrive within 10 s")),
        };
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let response = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

type Answer = (u16, Option<Value>);

fn error_body(why: impl Into<String>) -> Option<Value> {
    Some(json!({ "error": why.into() }))
}

/// Reads the request line and headers, and the body (discarded). The head as text.
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Result<String, Answer> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(at) = find(&buffer, b"\r\n\r\n") {
            break at;
        }
        if buffer.len() > MAX_HEAD {
            return Err((431, error_body("request head over 8 KiB")));
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| (400, error_body(format!("read failed: {e}"))))?;
        if n == 0 {
            return Err((
                400,
                error_body("connection closed before the request ended"),
            ));
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buffer[..head_end])
        .map_err(|_| (400, error_body("request head is not UTF-8")))?
        .to_string();
    let length = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.trim().parse::<usize>())
        .transpose()
        .map_err(|_| (400, error_body("content-length is not a number")))?
        .unwrap_or(0);
    if length > MAX_BODY {
        return Err((413, error_body("request body over 64 KiB")));
    }
    // Read what the client sends, so closing does not reset the connection under the answer.
    let mut remaining = length.saturating_sub(buffer.len() - head_end - 4);
    while remaining > 0 {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| (400, error_body(format!("read failed: {e}"))))?;
        if n == 0 {
            break;
        }
        remaining = remaining.saturating_sub(n);
    }
    Ok(head)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Routes one request (the head as text) and carries it out.
pub(crate) fn handle(head: &str, namespace: &Namespace, default_partitions: u32) -> Answer {
    let mut words = head.lines().next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version)) = (words.next(), words.next(), words.next())
    else {
        return (400, error_body("malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return (400, error_body("only HTTP/1.x is served"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("GET", ["hubs"]) => (
            200,
            Some(Value::Array(
                namespace.all().iter().map(|h| describe(h)).collect(),
            )),
        ),
        ("GET", ["hubs", hub]) => match namespace.existing(hub) {
            Some(hub) => (200, Some(describe(&hub))),
            None => (404, error_body(format!("event hub {hub:?} does not exist"))),
        },
        ("PUT", ["hubs", name]) => {
            let partitions = match query_value(query, "partitions") {
                None => default_partitions,
                Some(text) => match text.parse() {
                    Ok(n) => n,
                    Err(_) => {
                        return (
                            400,
                            error_body(format!("partitions={text:?} is not a number")),
                        );
                    }
                },
            };
            match namespace.create_hub(&HubConfig::new(*name, partitions)) {
                Ok(true) => match namespace.existing(name) {
                    Some(hub) => (201, Some(describe(&hub))),
                    None => (
                        409,
                        error_body(format!("event hub {name:?} was deleted meanwhile")),
                    ),
                },
                Ok(false) => (409, error_body(format!("event hub {name:?} exists"))),
                Err(e) => failed(e),
            }
        }
        ("DELETE", ["hubs", name]) => match namespace.delete_hub(name) {
            Ok(()) => (204, None),
            Err(e) => failed(e),
        },
        ("PUT", ["hubs", hub, "consumergroups", group]) => {
            match namespace.create_group(hub, group) {
                Ok(true) => (201, Some(json!({ "hub": hub, "name": group }))),
                Ok(false) => (
                    409,
                    error_body(format!("consumer group {group:?} of {hub:?} exists")),
                ),
                Err(e) => failed(e),
            }
        }
        ("POST", ["hubs", hub, "detach-receivers"]) => {
            match namespace.detach_receivers(hub, query_value(query, "partition")) {
                Ok(detached) => (200, Some(json!({ "detached": detached }))),
                Err(NotFound(why)) => (404, error_body(why)),
            }
        }
        (
            _,
            ["hubs"]
            | ["hubs", _]
            | ["hubs", _, "consumergroups", _]
            | ["hubs", _, "detach-receivers"],
        ) => (405, error_body(format!("{method} is not served on {path}"))),
        _ => (404, error_body(format!("no such resource: {path}"))),
    }
}

fn failed(error: AdminError) -> Answer {
    match error {
        AdminError::Invalid(why) => (400, error_body(why)),
        AdminError::NotFound(why) => (404, error_body(why)),
        AdminError::Io(e) => (500, error_body(format!("data directory: {e}"))),
    }
}

fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn describe(hub: &Hub) -> Value {
    json!({
        "name": hub.name,
        "partition_count": hub.partitions.len(),
        "consumer_groups": hub.groups(),
        "created_at_ms": hub.created_ms,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use crate::store::Detach;

    fn namespace(dir: Option<&std::path::Path>) -> Namespace {
        let config = Config {
            auto_create: false,
            data_dir: dir.map(|d| d.to_path_buf()),
            ..Config::for_tests()
        };
        Namespace::open(&config).expect("namespace")
    }

    fn request(ns: &Namespace, line: &str) -> Answer {
        handle(&format!("{line}\r\nhost: x\r\n"), ns, 4)
    }

    #[test]
    fn hubs_are_made_listed_and_removed() {
        let ns = namespace(None);
        let (status, body) = request(&ns, "PUT /hubs/orders?partitions=3 HTTP/1.1");
        assert_eq!(status, 201, "{body:?}");
        let body = body.unwrap();
        assert_eq!(body["partition_count"], 3);
        assert_eq!(body["consumer_groups"], json!(["$Default"]));
        assert_eq!(ns.hub("ORDERS").unwrap().partitions.len(), 3);
        assert_eq!(request(&ns, "PUT /hubs/orders HTTP/1.1").0, 409);
        assert_eq!(
            request(&ns, "PUT /hubs/other HTTP/1.1").1.unwrap()["partition_count"],
            4
        );
        let (status, body) = request(&ns, "GET /hubs HTTP/1.1");
        assert_eq!(status, 200);
        let names: Vec<_> = body
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["name"].clone())
            .collect();
        assert_eq!(names, [json!("orders"), json!("other")]);
        assert_eq!(request(&ns, "DELETE /hubs/orders HTTP/1.1").0, 204);
        assert_eq!(request(&ns, "GET /hubs/orders HTTP/1.1").0, 404);
        assert!(
            ns.hub("orders").is_err(),
            "deleted, and auto-creation is off"
        );
        assert_eq!(request(&ns, "DELETE /hubs/orders HTTP/1.1").0, 404);
    }

    #[test]
    fn receivers_are_force_detached_on_request() {
        let ns = namespace(None);
        assert_eq!(request(&ns, "PUT /hubs/moved?partitions=2 HTTP/1.1").0, 201);
        let hub = ns.hub("moved").unwrap();
        let mut zero = hub.partition("0").unwrap().claim("g", Some(0), 1).unwrap();
        let mut one = hub.partition("1").unwrap().claim("g", None, 2).unwrap();
        let (status, body) = request(
            &ns,
            "POST /hubs/moved/detach-receivers?partition=1 HTTP/1.1",
        );
        assert_eq!((status, body.unwrap()["detached"].clone()), (200, json!(1)));
        assert!(matches!(one.ended.try_recv(), Ok(Detach::Forced(_))));
        assert!(zero.ended.try_recv().is_err(), "partition 0 was not named");
        let (status, body) = request(&ns, "POST /hubs/moved/detach-receivers HTTP/1.1");
        assert_eq!((status, body.unwrap()["detached"].clone()), (200, json!(1)));
        assert!(matches!(zero.ended.try_recv(), Ok(Detach::Forced(_))));
        assert_eq!(
            request(&ns, "POST /hubs/gone/detach-receivers HTTP/1.1").0,
            404
        );
        assert_eq!(
            request(
                &ns,
                "POST /hubs/moved/detach-receivers?partition=7 HTTP/1.1"
            )
            .0,
            404
        );
        assert_eq!(
            request(&ns, "GET /hubs/moved/detach-receivers HTTP/1.1").0,
            405
        );
    }

    #[test]
    fn consumer_groups_are_made_on_existing_hubs() {
        let ns = namespace(None);
        assert_eq!(
            request(&ns, "PUT /hubs/h/consumergroups/cg HTTP/1.1").0,
            404
        );
        request(&ns, "PUT /hubs/h?partitions=1 HTTP/1.1");
        assert_eq!(
            request(&ns, "PUT /hubs/h/consumergroups/cg HTTP/1.1").0,
            201
        );
        assert_eq!(
            request(&ns, "PUT /hubs/h/consumergroups/cg HTTP/1.1").0,
            409
        );
        assert_eq!(
            request(&ns, "PUT /hubs/h/consumergroups/-bad HTTP/1.1").0,
            400
        );
        let hub = ns.hub("h").unwrap();
        assert!(ns.check_group(&hub, "cg").is_ok());
    }

    #[test]
    fn bad_requests_are_refused_with_reasons() {
        let ns = namespace(None);
        for (line, status) in [
            ("PUT /hubs/x?partitions=0 HTTP/1.1", 400),
            ("PUT /hubs/x?partitions=1025 HTTP/1.1", 400),
            ("PUT /hubs/x?partitions=many HTTP/1.1", 400),
            ("PUT /hubs/.hidden HTTP/1.1", 400),
            ("PUT /hubs/a%2Fb HTTP/1.1", 400),
            ("POST /hubs/x HTTP/1.1", 405),
            ("GET /elsewhere HTTP/1.1", 404),
            ("GET /hubs HTTP/2", 400),
            ("GET", 400),
            ("", 400),
        ] {
            let (got, body) = request(&ns, line);
            assert_eq!(got, status, "{line}: {body:?}");
            assert!(body.unwrap()["error"].is_string(), "{line}");
        }
        assert!(ns.all().is_empty());
    }

    #[test]
    fn made_hubs_survive_a_restart_and_deleted_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ns = namespace(Some(dir.path()));
            request(&ns, "PUT /hubs/kept?partitions=2 HTTP/1.1");
            request(&ns, "PUT /hubs/kept/consumergroups/cg HTTP/1.1");
            request(&ns, "PUT /hubs/gone HTTP/1.1");
            assert_eq!(request(&ns, "DELETE /hubs/gone HTTP/1.1").0, 204);
        }
        let ns = namespace(Some(dir.path()));
        let hubs = ns.all();
        assert_eq!(hubs.len(), 1);
        assert_eq!(hubs[0].partitions.len(), 2);
        assert_eq!(hubs[0].groups(), ["$Default", "cg"]);
    }
}

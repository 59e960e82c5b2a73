//! Readiness probes: each one is a real request in the server's own protocol, because an open
//! port only proves that something listens (Kafka accepts connections before its controller has
//! elected itself; Pulsar serves HTTP before it has created `public/default`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(2);

fn connect(addr: &str) -> Result<TcpStream, String> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).ok();
    stream.set_write_timeout(Some(IO_TIMEOUT)).ok();
    Ok(stream)
}

/// Kafka: a Metadata v1 request must list at least one broker and a controller.
pub(crate) fn kafka(addr: &str) -> Result<(), String> {
    let mut stream = connect(addr)?;
    let client_id = b"tributary-probe";
    let mut request = Vec::new();
    request.extend_from_slice(&3i16.to_be_bytes()); // Metadata
    request.extend_from_slice(&1i16.to_be_bytes()); // v1
    request.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    request.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    request.extend_from_slice(client_id);
    request.extend_from_slice(&(-1i32).to_be_bytes()); // all topics
    let mut frame = (request.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&request);
    stream
        .write_all(&frame)
        .map_err(|e| format!("send Metadata: {e}"))?;

    let mut size = [0u8; 4];
    stream
        .read_exact(&mut size)
        .map_err(|e| format!("read Metadata response: {e}"))?;
    let size = i32::from_be_bytes(size);
    if !(8..=16 << 20).contains(&size) {
        return Err(format!("implausible Metadata response size {size}"));
    }
    let mut body = vec![0u8; size as usize];
    stream
        .read_exact(&mut body)
        .map_err(|e| format!("read Metadata response: {e}"))?;
    let mut cursor = Cursor {
        bytes: &body,
        at: 0,
    };
    if cursor.i32()? != 7 {
        return Err("Metadata response has the wrong correlation id".into());
    }
    let brokers = cursor.i32()?;
    for _ in 0..brokers.max(0) {
        cursor.i32()?; // node id
        cursor.string()?; // host
        cursor.i32()?; // port
        cursor.string()?; // rack (nullable)
    }
    let controller = cursor.i32()?;
    if brokers < 1 || controller < 0 {
        return Err(format!(
            "broker not ready: {brokers} brokers, controller {controller}"
        ));
    }
    Ok(())
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or("truncated Metadata response")?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn string(&mut self) -> Result<(), String> {
        let len = i16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes"));
        if len > 0 {
            self.take(len as usize)?;
        }
        Ok(())
    }
}

/// A plain HTTP/1.1 exchange; returns the status code and the body.
pub(crate) fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String), String> {
    let mut stream = connect(addr)?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send {method} {path}: {e}"))?;
    stream
        .write_all(body)
        .map_err(|e| format!("send {method} {path}: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read {method} {path}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "{method} {path}: no HTTP status in {:?}",
                text.chars().take(80).collect::<String>()
            )
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Pulsar: the admin API must list the `public/default` namespace, which the standalone
/// starter creates last.
pub(crate) fn pulsar(http_addr: &str) -> Result<(), String> {
    let (status, body) = http(http_addr, "GET", "/admin/v2/namespaces/public", &[], b"")?;
    if status == 200 && body.contains("public/default") {
        Ok(())
    } else {
        Err(format!(
            "GET /admin/v2/namespaces/public: {status} {}",
            body.trim()
        ))
    }
}

/// gRPC servers (pstest): an HTTP/2 connection preface must be answered with a SETTINGS frame.
pub(crate) fn grpc(addr: &str) -> Result<(), String> {
    let mut stream = connect(addr)?;
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
    stream
        .write_all(&preface)
        .map_err(|e| format!("send HTTP/2 preface: {e}"))?;
    let mut header = [0u8; 9];
    stream
        .read_exact(&mut header)
        .map_err(|e| format!("read HTTP/2 SETTINGS: {e}"))?;
    if header[3] == 4 {
        Ok(())
    } else {
        Err(format!(
            "expected an HTTP/2 SETTINGS frame, got frame type {}",
            header[3]
        ))
    }
}

/// Kinesis: a signed-looking `ListStreams` call must succeed (emulators check the header's shape).
pub(crate) fn kinesis(addr: &str) -> Result<(), String> {
    let headers = [
        ("Content-Type", "application/x-amz-json-1.1"),
        ("X-Amz-Target", "Kinesis_20131202.ListStreams"),
        ("X-Amz-Date", "20260101T000000Z"),
        (
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=probe/20260101/us-east-1/kinesis/aws4_request, SignedHeaders=host;x-amz-date, Signature=0000",
        ),
    ];
    let (status, body) = http(addr, "POST", "/", &headers, b"{}")?;
    if status == 200 && body.contains("StreamNames") {
        Ok(())
    } else {
        Err(format!("ListStreams: {status} {}", body.trim()))
    }
}

/// Azure Blob Storage (Azurite): an unauthenticated listing of the development account's
/// containers must be refused with 403, which only the running blob handler answers.
pub(crate) fn blob(addr: &str) -> Result<(), String> {
    let path = format!("/{}?comp=list", crate::AZURITE_ACCOUNT);
    let (status, body) = http(addr, "GET", &path, &[], b"")?;
    if status == 403 {
        Ok(())
    } else {
        Err(format!("GET {path}: {status} {}", body.trim()))
    }
}

/// DynamoDB (dynalite): a signed-looking `ListTables` call must succeed.
pub(crate) fn dynamodb(addr: &str) -> Result<(), String> {
    let headers = [
        ("Content-Type", "application/x-amz-json-1.0"),
        ("X-Amz-Target", "DynamoDB_20120810.ListTables"),
        ("X-Amz-Date", "20260101T000000Z"),
        (
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=probe/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date, Signature=0000",
        ),
    ];
    let (status, body) = http(addr, "POST", "/", &headers, b"{}")?;
    if status == 200 && body.contains("TableNames") {
        Ok(())
    } else {
        Err(format!("ListTables: {status} {}", body.trim()))
    }
}

/// AMQP 1.0 servers (the Event Hubs emulator): the SASL protocol header must be echoed, which
/// the server does only once its listener hands the connection to the AMQP engine.
pub(crate) fn amqp(addr: &str) -> Result<(), String> {
    const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
    let mut stream = connect(addr)?;
    stream
        .write_all(&SASL_HEADER)
        .map_err(|e| format!("send AMQP SASL header: {e}"))?;
    let mut reply = [0u8; 8];
    stream
        .read_exact(&mut reply)
        .map_err(|e| format!("read AMQP protocol header: {e}"))?;
    if reply == SASL_HEADER {
        Ok(())
    } else {
        Err(format!("expected the AMQP SASL header, got {reply:?}"))
    }
}

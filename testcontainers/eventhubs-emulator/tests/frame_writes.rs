//! The vendored fe2o3-amqp's connection engine writes the frames queued behind one another
//! with one flush (its fourth TRIBUTARY PATCH; before it, one socket write per frame): a burst
//! of transfers to the emulator, through a real socket whose writes are counted.

mod common;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use azure_messaging_eventhubs::StartLocation;
use common::*;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::messaging::Message;
use fe2o3_amqp::types::primitives::Binary;
use fe2o3_amqp::{Connection, Sendable, Sender, Session};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tributary_eventhubs_emulator::{Config, HubConfig};

const EVENTS: usize = 1000;

/// A TCP stream that counts its writes: each `poll_write` that writes is one `sendto`.
#[derive(Debug)]
struct CountingStream {
    inner: TcpStream,
    writes: Arc<AtomicUsize>,
}

impl AsyncRead for CountingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_burst_of_transfers_takes_far_fewer_writes_than_frames() {
    let emulator = start(Config::for_tests().with_hub(HubConfig::new("burst", 1))).await;
    let writes = Arc::new(AtomicUsize::new(0));
    let stream = CountingStream {
        inner: TcpStream::connect(emulator.local_addr())
            .await
            .expect("connect"),
        writes: writes.clone(),
    };
    let mut connection = Connection::builder()
        .container_id("frame-writes")
        .sasl_profile(SaslProfile::Anonymous)
        .open_with_stream(stream)
        .await
        .expect("connection opens");
    let mut session = Session::begin(&mut connection)
        .await
        .expect("session begins");
    let mut sender = Sender::attach(&mut session, "burst-sender", "burst/Partitions/0")
        .await
        .expect("sender attaches");

    let before = writes.load(Ordering::Relaxed);
    let mut outcomes = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        let message = Message::builder()
            .data(Binary::from(format!("e-{i}").into_bytes()))
            .build();
        // Handed to the session without waiting for the outcome: the transfers queue up.
        let sendable = Sendable::builder().message(message).build();
        outcomes.push(sender.send_batchable(sendable).await.expect("send"));
    }
    for outcome in outcomes {
        tokio::time::timeout(Duration::from_secs(30), outcome)
            .await
            .expect("outcome within 30 s")
            .expect("accepted");
    }
    let burst_writes = writes.load(Ordering::Relaxed) - before;
    println!("{EVENTS} transfers (and their flows) in {burst_writes} socket writes");
    assert!(
        burst_writes * 4 <= EVENTS,
        "{EVENTS} transfers took {burst_writes} socket writes: frames are flushed one by one"
    );
    sender.close().await.expect("close sender");
    session.end().await.expect("end session");
    connection.close().await.expect("close connection");

    // Written in order, each once.
    let consumer = consumer(&emulator, "burst", None).await;
    let receiver = consumer
        .open_receiver_on_partition("0".to_string(), from(StartLocation::Earliest, false))
        .await
        .expect("receiver");
    let got = bodies(&receive(&receiver, EVENTS, Duration::from_secs(30)).await);
    let want: Vec<String> = (0..EVENTS).map(|i| format!("e-{i}")).collect();
    assert_eq!(got, want);
}

//! The clients' TCP connections to Event Hubs are opened with Nagle's algorithm off.
//!
//! AMQP's requests are small frames, often written one right behind another (an attach then
//! its flow, a management request behind a disposition). With Nagle's algorithm on, a small
//! write behind one not yet acknowledged waits for the service's delayed ACK, about 40 ms on
//! Linux: a consumer's join took 48, 92 or 136 ms on the in-process emulator and its first
//! events came 100–185 ms after it, where with `TCP_NODELAY` they take 6–10 ms and 2–43 ms
//! (`docs/benchmarks/NOTES.md`, Event Hubs). The sockets belong to the SDK's AMQP stack, so
//! this test finds them among the process's open files and asks the kernel.

mod common;

use std::time::Duration;

use tributary::{ConsumerOptions, Event, StartPosition};

/// The TCP sockets of this process whose peer is 127.0.0.1:`port`, each with whether it has
/// `TCP_NODELAY` set.
fn sockets_connected_to(port: u16) -> Vec<(i32, bool)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: `peer` and `len` are valid for writes of the sizes given; a descriptor that
        // is not a socket (or closed meanwhile) makes the call fail, which is skipped.
        let mut peer: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let got =
            unsafe { libc::getpeername(fd, (&raw mut peer).cast::<libc::sockaddr>(), &mut len) };
        if got != 0
            || i32::from(peer.sin_family) != libc::AF_INET
            || u16::from_be(peer.sin_port) != port
        {
            continue;
        }
        let mut nodelay: libc::c_int = 0;
        let mut size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: as above, for an int.
        let asked = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&raw mut nodelay).cast::<libc::c_void>(),
                &mut size,
            )
        };
        if asked == 0 {
            found.push((fd, nodelay != 0));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_to_the_service_has_nagle_s_algorithm_off() {
    let (emulator, base, hub) = common::in_process_emulator("nodelay", 2).await;
    let port: u16 = emulator
        .endpoint()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("the emulator's endpoint ends with its port");
    tributary_eventhubs::register();
    let backend = tributary::connect(&format!("{base}&timeout=10s"))
        .await
        .expect("connect");
    let producer = backend.producer(&hub).await.expect("producer");
    producer
        .send(Event::new("one").with_key("k"))
        .await
        .expect("send");
    let consumer = backend
        .consumer(
            &hub,
            ConsumerOptions::new("nodelay").start(StartPosition::Earliest),
        )
        .await
        .expect("consumer");
    let got = common::receive_n(consumer.as_ref(), 1, Duration::from_secs(10)).await;
    got.into_iter().for_each(|d| d.ack());

    // Both clients are connected now: the producer's and the consumer's.
    let sockets = sockets_connected_to(port);
    println!("connections to the emulator (fd, TCP_NODELAY): {sockets:?}");
    assert!(
        sockets.len() >= 2,
        "expected the producer's and the consumer's connections to 127.0.0.1:{port}, found {sockets:?}"
    );
    assert!(
        sockets.iter().all(|(_, nodelay)| *nodelay),
        "a connection to the service has Nagle's algorithm on (fd, TCP_NODELAY): {sockets:?}"
    );
    consumer.close().await.expect("close consumer");
    producer.close().await.expect("close producer");
    backend.close().await.expect("close backend");
}

//! Three consumer processes share a 4-partition hub through Azurite; one is SIGKILLed while
//! events flow; the other two take its partitions. Nothing is lost, and what is delivered
//! again stays within the in-flight window of each change of owner.
//!
//! The members are this test binary run again (`member_process`, which does nothing unless
//! `EH_MEMBER_URL` is set): each joins the group, prints `payload partition position` for every
//! delivery before acking it, and closes (commit and release) when its stdin closes. Their
//! engine logs (`tributary=debug`: every lease taken, lost and released) are kept and printed
//! when the test fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tributary::{ConsumerExt, ConsumerOptions, Event, StartPosition};
use tributary_testcontainers::{this_test_binary_running, unique_name};

/// Events sent while the members run; member 0 dies a third of the way through.
const EVENTS: usize = 3000;
/// How long after the kill the two survivors may take to both hold a share of the hub. The
/// engine balances every second and a member holding nothing steals in its next round; this
/// bounds a stalled machine, not the design.
const BALANCED_WITHIN: Duration = Duration::from_secs(30);
const MAX_IN_FLIGHT: usize = 200;

/// One member of the group, when started by `three_members_one_killed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_process() {
    let (Ok(url), Ok(hub), Ok(group)) = (
        std::env::var("EH_MEMBER_URL"),
        std::env::var("EH_MEMBER_HUB"),
        std::env::var("EH_MEMBER_GROUP"),
    ) else {
        return;
    };
    // The parent sets RUST_LOG=tributary=debug and keeps this stderr: what each member owned
    // and when, for the failure message.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let backend = common::connect(&url).await;
    let consumer = backend
        .consumer(
            &hub,
            ConsumerOptions::new(&group)
                .start(StartPosition::Earliest)
                .max_in_flight(MAX_IN_FLIGHT),
        )
        .await
        .expect("join");
    println!("ready");
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 1];
    let closed = stdin.read(&mut buf);
    tokio::pin!(closed);
    loop {
        tokio::select! {
            _ = &mut closed => break,
            delivery = consumer.receive_timeout(Duration::from_millis(200)) => {
                if let Some(delivery) = delivery.expect("receive") {
                    println!(
                        "{} {} {}",
                        String::from_utf8_lossy(&delivery.event.payload),
                        delivery.partition.as_ref().map(|p| p.as_str()).unwrap_or("-"),
                        delivery.position.as_ref().map(|p| p.as_str()).unwrap_or("-"),
                    );
                    delivery.ack();
                }
            }
        }
    }
    consumer.close().await.expect("close");
    backend.close().await.expect("close backend");
    println!("closed");
}

struct Member {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

fn spawn_member(url: &str, hub: &str, group: &str) -> Member {
    let mut child = Command::from(this_test_binary_running("member_process"))
        .env("EH_MEMBER_URL", url)
        .env("EH_MEMBER_HUB", hub)
        .env("EH_MEMBER_GROUP", group)
        .env("RUST_LOG", "tributary=debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn member");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let kept = log.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            kept.lock().expect("log").push(line);
        }
    });
    let (tx, lines) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Member { child, lines, log }
}

/// Fails the test with `why`, after printing what each member logged.
fn fail(members: &[Member], why: String) -> ! {
    for (index, member) in members.iter().enumerate() {
        let log = member.log.lock().expect("log");
        eprintln!("---- member {index}: {} lines of log ----", log.len());
        for line in log.iter() {
            eprintln!("{line}");
        }
    }
    panic!("{why}");
}

/// Deliveries per member, from `seen`.
fn per_member(seen: &BTreeMap<String, Vec<usize>>) -> [usize; 3] {
    let mut counts = [0usize; 3];
    for by in seen.values() {
        for member in by {
            counts[*member] += 1;
        }
    }
    counts
}

/// Moves what members printed into `seen` (payload → members that printed it, in order).
fn drain(
    members: &mut [Member],
    seen: &mut BTreeMap<String, Vec<usize>>,
    ready: &mut BTreeSet<usize>,
) {
    for (index, member) in members.iter_mut().enumerate() {
        while let Ok(line) = member.lines.try_recv() {
            // libtest writes "test member_process ... " before the first line of output.
            if line.ends_with("ready") {
                ready.insert(index);
            } else if let Some(payload) = line.split(' ').next().filter(|p| p.starts_with("ev-")) {
                seen.entry(payload.to_string()).or_default().push(index);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_one_killed() {
    if std::env::var("EH_MEMBER_URL").is_ok() {
        return;
    }
    let Some((eventhubs, azurite)) = common::servers() else {
        return;
    };
    let url = common::url(&eventhubs, &azurite, "");
    let hub = unique_name("kill");
    let group = unique_name("g");
    let backend = common::connect(&url).await;
    let producer = backend.producer(&hub).await.expect("producer");
    assert_eq!(
        backend
            .describe_stream(&hub)
            .await
            .expect("describe")
            .partitions
            .len(),
        4
    );

    let mut members: Vec<Member> = (0..3).map(|_| spawn_member(&url, &hub, &group)).collect();
    for (index, member) in members.iter().enumerate() {
        eprintln!("member {index} is process {:?}", member.child.id());
    }
    let mut seen: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut ready = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while ready.len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "members not ready in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        drain(&mut members, &mut seen, &mut ready);
    }

    // Events flow in batches; a third of the way through, member 0 dies.
    let mut killed_at = None;
    for (round, chunk) in (0..EVENTS).collect::<Vec<_>>().chunks(100).enumerate() {
        let events: Vec<Event> = chunk
            .iter()
            .map(|i| Event::new(format!("ev-{i}")).with_key(format!("key-{}", i % 16)))
            .collect();
        producer.send_batch(events).await.expect("send");
        tokio::time::sleep(Duration::from_millis(150)).await;
        drain(&mut members, &mut seen, &mut ready);
        if round == 10 {
            let pid = members[0].child.id().expect("member 0 runs") as libc::pid_t;
            // SAFETY: kill(2) on a child process of this test.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
            let _ = members[0].child.wait().await;
            killed_at = Some(seen.len());
        }
    }
    let killed_at = killed_at.expect("member 0 was killed");
    let killed = tokio::time::Instant::now();

    // Traffic goes on, a batch every 500 ms, until both survivors have delivered some of it:
    // the survivor that balances first takes every partition the dead member held, and the
    // other must get its share from it while there is something left to read.
    let mut sent = EVENTS;
    let balanced_after = loop {
        drain(&mut members, &mut seen, &mut ready);
        let counts = per_member(&seen);
        if counts[1] > 0 && counts[2] > 0 {
            break killed.elapsed();
        }
        if killed.elapsed() > BALANCED_WITHIN {
            fail(
                &members,
                format!(
                    "both survivors delivered events within {BALANCED_WITHIN:?} of the kill: deliveries per member {counts:?}"
                ),
            );
        }
        let events: Vec<Event> = (sent..sent + 20)
            .map(|i| Event::new(format!("ev-{i}")).with_key(format!("key-{}", i % 16)))
            .collect();
        producer.send_batch(events).await.expect("send");
        sent += 20;
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while seen.len() < sent {
        if tokio::time::Instant::now() >= deadline {
            fail(
                &members,
                format!(
                    "only {} of {sent} events delivered within 90 s of the last send",
                    seen.len()
                ),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        drain(&mut members, &mut seen, &mut ready);
    }
    // A little longer, so late duplicates show too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drain(&mut members, &mut seen, &mut ready);

    for member in &mut members[1..] {
        drop(member.child.stdin.take());
    }
    for member in &mut members[1..] {
        let status = tokio::time::timeout(Duration::from_secs(30), member.child.wait())
            .await
            .expect("a member closes within 30 s of its stdin closing")
            .expect("wait");
        assert!(status.success(), "member exited with {status}");
    }
    drain(&mut members, &mut seen, &mut ready);

    let missing: Vec<usize> = (0..sent)
        .filter(|i| !seen.contains_key(&format!("ev-{i}")))
        .collect();
    if !missing.is_empty() {
        fail(&members, format!("lost events: {missing:?}"));
    }
    let duplicates: Vec<(&String, &Vec<usize>)> =
        seen.iter().filter(|(_, by)| by.len() > 1).collect();
    // At least once: a partition that changes owner replays what its previous owner had not
    // committed, at most its in-flight window. That happens to the killed member's partitions,
    // and also between the survivors while they even out (the engine moves one partition at a
    // time, and a member can get back a partition it gave up).
    let replayed_by_survivors = duplicates.iter().filter(|(_, by)| by[0] != 0).count();
    for (payload, by) in &duplicates {
        assert!(
            by.len() <= 3,
            "{payload} delivered {} times ({by:?})",
            by.len()
        );
    }
    assert!(
        duplicates.len() <= 3 * MAX_IN_FLIGHT,
        "{} duplicates exceed three ownership changes of an in-flight window of {MAX_IN_FLIGHT}",
        duplicates.len()
    );
    let survivors: BTreeSet<usize> = seen
        .values()
        .flat_map(|by| by.iter().copied())
        .filter(|m| *m != 0)
        .collect();
    assert_eq!(survivors.len(), 2, "both survivors delivered events");
    println!(
        "{sent} events ({} of them sent after the first {EVENTS}, until both survivors had delivered, {} ms after the kill), {} delivered before the kill, {} delivered again ({} of them first delivered by a survivor); deliveries per member {:?}; in-flight limit {MAX_IN_FLIGHT}",
        sent - EVENTS,
        balanced_after.as_millis(),
        killed_at,
        duplicates.len(),
        replayed_by_survivors,
        per_member(&seen),
    );
    producer.close().await.expect("close producer");
    backend.close().await.expect("close backend");
}

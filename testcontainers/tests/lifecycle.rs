//! Servers never outlive their test process, and a server that cannot start says which, why
//! and how to fix it.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tributary_testcontainers::{
    KillOnDrop, Launcher, Mode, Peer, Reason, lines_until, peers_required, process_group_alive,
    shared, this_test_binary_running,
};

const CHILD_VARIABLE: &str = "TRIBUTARY_LIFECYCLE_CHILD";

fn launcher_in(peers_dir: &std::path::Path, work_dir: &std::path::Path) -> Launcher {
    Launcher {
        mode: Mode::Native,
        peers_dir: peers_dir.to_path_buf(),
        work_dir: work_dir.to_path_buf(),
        startup_timeout: Duration::from_secs(20),
    }
}

fn wait_gone(pgid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !process_group_alive(pgid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Run by [`killing_the_test_process_stops_its_servers`] in a child process; a no-op otherwise.
#[test]
#[ignore = "helper: run as a child process by killing_the_test_process_stops_its_servers"]
fn child_process_holding_servers() {
    let Ok(peers) = std::env::var(CHILD_VARIABLE) else {
        return;
    };
    for name in peers.split(',') {
        let peer = *Peer::ALL
            .iter()
            .find(|p| p.name() == name)
            .expect("known peer");
        match shared(peer) {
            Ok(server) => println!(
                "PGID {name} {}",
                server.pid().expect("native server has a pid")
            ),
            Err(error) => println!(
                "UNAVAILABLE {name} {}",
                error.to_string().replace('\n', " / ")
            ),
        }
    }
    println!("READY");
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn killing_the_test_process_stops_its_servers() {
    // Killed however this test ends, before it kills the child itself.
    let mut child = KillOnDrop(
        this_test_binary_running("child_process_holding_servers")
            .env(CHILD_VARIABLE, "pubsub,kafka")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child test process"),
    );
    let mut groups = Vec::new();
    let mut unavailable = Vec::new();
    // Kafka starts in about 3 s here, Pub/Sub in 0.2 s; 120 s is for a loaded machine and
    // ends before the runner's deadline (180 s), with what the child printed.
    let lines = lines_until(
        child.stdout.take().expect("stdout"),
        "READY",
        Duration::from_secs(120),
    )
    .unwrap_or_else(|why| panic!("the child test process never got its servers: {why}"));
    for line in lines {
        // libtest prints "test <name> ... " without a newline before the test's own output.
        let line = ["PGID ", "UNAVAILABLE ", "READY"]
            .iter()
            .find_map(|marker| line.find(marker).map(|at| line[at..].to_string()))
            .unwrap_or_default();
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("PGID"), Some(name), Some(pid)) => {
                groups.push((name.to_string(), pid.parse::<u32>().expect("pid")))
            }
            (Some("UNAVAILABLE"), Some(name), Some(why)) => {
                unavailable.push(format!("{name}: {why}"))
            }
            (Some("READY"), ..) => break,
            _ => {}
        }
    }
    // SIGKILL: no destructor, no atexit, no signal handler runs in the child.
    child.kill().expect("kill the child");
    child.wait().expect("reap the child");

    if !unavailable.is_empty() {
        assert!(
            !peers_required(),
            "servers unavailable in the child: {unavailable:?}"
        );
        eprintln!("SKIPPED part of killing_the_test_process_stops_its_servers: {unavailable:?}");
    }
    for (name, pgid) in &groups {
        assert!(
            wait_gone(*pgid, Duration::from_secs(20)),
            "{name} (process group {pgid}) still running 20 s after its test process was killed"
        );
        println!("{name}: process group {pgid} gone after the test process was SIGKILLed");
    }
    assert_eq!(
        groups.len() + unavailable.len(),
        2,
        "the child reported {groups:?} {unavailable:?}"
    );
}

#[test]
fn a_panicking_test_stops_its_server() {
    let launcher = Launcher::from_env().expect("launcher");
    if launcher.mode != Mode::Native {
        return;
    }
    let pid = std::sync::Mutex::new(None);
    let outcome = std::panic::catch_unwind(|| {
        let server = match launcher.start(Peer::PubSub) {
            Ok(server) => server,
            Err(error) if error.reason == Reason::NotInstalled && !peers_required() => {
                eprintln!("SKIPPED a_panicking_test_stops_its_server: {error}");
                return;
            }
            Err(error) => panic!("{error}"),
        };
        *pid.lock().unwrap() = server.pid();
        panic!("the test fails while holding the server");
    });
    let Some(pgid) = *pid.lock().unwrap() else {
        return;
    };
    assert!(outcome.is_err());
    assert!(
        wait_gone(pgid, Duration::from_secs(10)),
        "pstest {pgid} survived the panic"
    );
}

#[test]
fn a_missing_server_says_which_and_how_to_install_it() {
    let empty = tempfile::tempdir().expect("tempdir");
    let error = launcher_in(empty.path(), empty.path())
        .start(Peer::Kafka)
        .expect_err("nothing installed");
    assert_eq!(error.reason, Reason::NotInstalled);
    let text = error.to_string();
    assert!(text.contains("Kafka server unavailable"), "{text}");
    assert!(
        text.contains("kafka/current/bin/kafka-server is missing"),
        "{text}"
    );
    assert!(
        text.contains("scripts/peers/install-all.sh kafka"),
        "{text}"
    );
}

#[test]
fn a_server_that_dies_at_start_up_shows_the_end_of_its_log() {
    let peers = fake_pstest(
        "#!/bin/sh\necho starting\necho 'fatal: cannot open the data directory' >&2\nexit 3\n",
    );

    let error = launcher_in(peers.path(), peers.path())
        .start(Peer::PubSub)
        .expect_err("it exits");
    assert_eq!(error.reason, Reason::StartFailed);
    let text = error.to_string();
    assert!(text.contains("exited during start-up"), "{text}");
    assert!(
        text.contains("fatal: cannot open the data directory"),
        "{text}"
    );
    assert!(
        error
            .log_path
            .as_ref()
            .is_some_and(|p| p.starts_with(peers.path())),
        "{text}"
    );
}

#[test]
fn a_server_that_never_answers_times_out_with_its_log() {
    // Claims to listen on a port where nothing answers.
    let peers = fake_pstest("#!/bin/sh\necho 'listening 127.0.0.1:9'\nexec sleep 60\n");

    let mut launcher = launcher_in(peers.path(), peers.path());
    launcher.startup_timeout = Duration::from_secs(2);
    let error = launcher.start(Peer::PubSub).expect_err("never ready");
    assert_eq!(error.reason, Reason::StartFailed);
    let text = error.to_string();
    assert!(text.contains("not serving after 2s"), "{text}");
    assert!(text.contains("listening 127.0.0.1:9"), "{text}");
}

/// A peers cache whose "installed pstest" is `script`, to test how failures are reported.
fn fake_pstest(script: &str) -> tempfile::TempDir {
    let peers = tempfile::tempdir().expect("tempdir");
    let bin = peers.path().join("pstest/current");
    std::fs::create_dir_all(&bin).unwrap();
    let path = bin.join("pstest");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    peers
}

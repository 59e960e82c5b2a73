//! What a person at a terminal sees: the live progress line (under a pseudo-terminal, and its
//! absence when output is piped), and shell completion scripts that the shells accept.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_tributary");
const DEADLINE: Duration = Duration::from_secs(120);

/// A pseudo-terminal pair: (controller, terminal).
fn pty() -> (OwnedFd, OwnedFd) {
    let (mut controller, mut terminal) = (0, 0);
    // SAFETY: openpty writes two new descriptors into the integers; name, termios and winsize
    // may be null.
    let rc = unsafe {
        libc::openpty(
            &mut controller,
            &mut terminal,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned by nobody else.
    unsafe {
        (
            OwnedFd::from_raw_fd(controller),
            OwnedFd::from_raw_fd(terminal),
        )
    }
}

/// Runs `tributary args…` with stdout and stderr on a pseudo-terminal; everything it showed.
fn on_terminal(args: &[&str]) -> (bool, String) {
    let (controller, terminal) = pty();
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(terminal.try_clone().unwrap())
        .stderr(terminal)
        .spawn()
        .unwrap();
    // The child holds the terminal now; reading the controller ends (EIO) once it exits.
    let (done, output) = mpsc::channel();
    std::thread::spawn(move || {
        let mut file = std::fs::File::from(controller);
        let mut shown = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = file.read(&mut chunk) {
            if n == 0 {
                break;
            }
            shown.extend_from_slice(&chunk[..n]);
        }
        let _ = done.send(shown);
    });
    let shown = match output.recv_timeout(DEADLINE) {
        Ok(shown) => shown,
        Err(_) => {
            let _ = child.kill();
            panic!("tributary {args:?} ran longer than {DEADLINE:?}");
        }
    };
    let status = child.wait().unwrap();
    (
        status.success(),
        String::from_utf8_lossy(&shown).into_owned(),
    )
}

#[test]
fn progress_is_live_on_a_terminal_and_absent_when_piped() {
    let (ok, shown) = on_terminal(&["demo", "--events", "150000"]);
    assert!(ok, "{shown}");
    // The line is rewritten in place: carriage return and erase-line, then the figures.
    let updates: Vec<&str> = shown
        .split("\r\x1b[2K")
        .skip(1)
        .filter(|s| !s.trim().is_empty())
        .collect();
    assert!(
        !updates.is_empty(),
        "no progress line on the terminal:\n{shown:?}"
    );
    let update = updates[0];
    assert!(update.contains("verified"), "{update:?}");
    assert!(
        update.contains("/150,000 ("),
        "count of the total: {update:?}"
    );
    assert!(update.contains("/s"), "rate: {update:?}");
    assert!(
        updates.iter().any(|u| u.contains("ETA ")),
        "time left: {updates:?}"
    );
    assert!(shown.contains("bridged 150000 of 150000 events"), "{shown}");

    let piped = Command::new(BIN)
        .args(["demo", "--events", "150000"])
        .output()
        .unwrap();
    assert!(piped.status.success());
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(
        !stderr.contains('\r') && !stderr.contains('\x1b'),
        "{stderr:?}"
    );
    assert!(String::from_utf8_lossy(&piped.stdout).contains("bridged 150000 of 150000 events"));
}

#[test]
fn consume_shows_its_count_against_n_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let lines: String = (0..200_000).map(|i| format!("event-{i}\n")).collect();
    let input = dir.path().join("input.txt");
    std::fs::write(&input, lines).unwrap();
    let produced = Command::new(BIN)
        .args(["produce", &url, "events"])
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert!(produced.status.success());
    let (ok, shown) = on_terminal(&["consume", &url, "events", "-n", "200000"]);
    assert!(ok, "{}", &shown[shown.len().saturating_sub(2000)..]);
    assert!(
        shown.contains("\r\x1b[2Kconsumed ") && shown.contains("/200,000 ("),
        "no live count on the terminal"
    );
}

/// Each shell's script, checked by that shell's own parser where it is installed.
#[test]
fn completions_for_bash_zsh_and_fish() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker, check) in [
        ("bash", "complete -F _tributary", vec!["bash", "-n"]),
        ("zsh", "#compdef tributary", vec!["zsh", "-n"]),
        (
            "fish",
            "complete -c tributary",
            vec!["fish", "--no-execute"],
        ),
    ] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: {script}");
        for sub in [
            "produce",
            "consume",
            "streams",
            "bridge",
            "conformance",
            "completions",
        ] {
            assert!(script.contains(sub), "{shell} script lacks `{sub}`");
        }
        let file = dir.path().join(format!("tributary.{shell}"));
        std::fs::write(&file, &script).unwrap();
        match Command::new(check[0]).args(&check[1..]).arg(&file).output() {
            Ok(checked) => assert!(
                checked.status.success(),
                "{shell} rejects its script: {}",
                String::from_utf8_lossy(&checked.stderr)
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("{shell} is not installed: its script's syntax is not checked")
            }
            Err(e) => panic!("{shell}: {e}"),
        }
    }
    let unknown = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
}

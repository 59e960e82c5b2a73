//! A filter that costs a million steps per event (six nested `map`s over ten elements) on two
//! routes: the daemon's operations endpoint keeps answering at once, and every event goes to
//! the dead-letter sink with "over the expression budget" as its reason.

mod harness;

use std::time::{Duration, Instant};

use harness::{Daemon, http_get, metric, run, wait_until};

const EVENTS: usize = 30;

fn six_maps() -> String {
    let ten = "[1,2,3,4,5,6,7,8,9,10]";
    format!(
        "size({ten}.map(a, {ten}.map(b, {ten}.map(c, {ten}.map(d, {ten}.map(e, {ten}.map(f, a + b + c + d + e + f))))))) > 0"
    )
}

#[test]
fn a_costly_filter_slows_only_its_route_and_dead_letters_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let source = format!("file://{}", dir.path().join("source").display());
    let dlq = format!("file://{}", dir.path().join("dlq").display());
    let lines: String = (0..EVENTS).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    for stream in ["a", "b"] {
        let (code, out) = run(&["produce", &source, stream], &[], &lines);
        assert_eq!(code, Some(0), "{out}");
    }
    let routes: String = ["a", "b"]
        .iter()
        .map(|name| {
            format!(
                "[[route]]\nname = \"{name}\"\nsource = {{ url = \"{source}\", stream = \"{name}\" }}\nsink = {{ url = \"memory://\", stream = \"{name}-copy\" }}\ndead_letter = {{ url = \"{dlq}\", stream = \"dead-{name}\" }}\nfilter = '{}'\nbatch = {{ max_events = 10 }}\nin_flight = 10\n",
                six_maps()
            )
        })
        .collect();
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!("[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"10s\"\n{routes}"),
    )
    .unwrap();
    let mut daemon = Daemon::start(&config, &[]);
    let addr = daemon.addr(Duration::from_secs(60));
    // Routes connect in the background: 503 "connecting" until they run.
    wait_until(Duration::from_secs(60), "the routes to run", || {
        (http_get(&addr, "/healthz").0 == 200).then_some(())
    });
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    wait_until(
        Duration::from_secs(300),
        "every event dead-lettered",
        || {
            let asked = Instant::now();
            let (status, body) = http_get(&addr, "/metrics");
            let took = asked.elapsed();
            slowest = slowest.max(took);
            assert_eq!(status, 200);
            assert!(
                took < Duration::from_secs(2),
                "/metrics took {took:?} while the filter ran"
            );
            let (health, _) = http_get(&addr, "/healthz");
            assert_eq!(
                health, 200,
                "the daemon is healthy while its routes are slow"
            );
            let dead: f64 = ["a", "b"]
                .iter()
                .map(|r| metric(&body, "tributary_bridge_dead_lettered_total", r).unwrap_or(0.0))
                .sum();
            (dead >= 2.0 * EVENTS as f64).then_some(())
        },
    );
    println!(
        "{} events dead-lettered in {:?}; slowest /metrics answer {slowest:?}",
        2 * EVENTS,
        started.elapsed()
    );
    let (status, _, log) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{log}");
    assert!(!log.contains("lost the group lease"), "{log}");
    for name in ["a", "b"] {
        let (code, out) = run(
            &[
                "consume",
                &dlq,
                &format!("dead-{name}"),
                "--from",
                "earliest",
                "-n",
                &EVENTS.to_string(),
                "--idle-exit",
                "5s",
                "--format",
                "json",
            ],
            &[],
            "",
        );
        assert_eq!(code, Some(0), "{out}");
        let dead: Vec<&str> = out.lines().filter(|l| l.starts_with('{')).collect();
        assert_eq!(dead.len(), EVENTS, "{out}");
        for line in dead {
            assert!(line.contains("over the expression budget"), "{line}");
            assert!(line.contains("tributary-dlq-reason"), "{line}");
        }
    }
}

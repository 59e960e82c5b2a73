//! `bridge validate` refuses what the daemon would refuse at start or fail on every event,
//! and names every problem of a file in one run.

mod harness;

use harness::validate;

fn route(i: usize, source: &str, sink: &str, extra: &str) -> String {
    format!(
        "[[route]]\nname = \"r{i}\"\nsource = {{ url = \"{source}\", stream = \"in\" }}\nsink = {{ url = \"{sink}\", stream = \"out\" }}\n{extra}\n"
    )
}

#[test]
fn validate_finds_what_start_and_the_first_event_would() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().display();
    let routes = [
        route(0, "kafak://127.0.0.1:1", "memory://", ""),
        route(1, &format!("file://{tmp}/x?fsync=bogus"), "memory://", ""),
        route(2, "memory://a/path", "memory://b", ""),
        route(
            3,
            "memory://",
            "kafka://127.0.0.1:1?rdkafka.no.such.setting=1",
            "",
        ),
        route(4, "memory://", "kafka://127.0.0.1:1?partitons=3", ""),
        route(5, "memory://", "memory://b", "filter = '1 + \"a\" == 2'"),
        route(6, "memory://", "memory://b", "filter = '42'"),
        route(
            7,
            "memory://",
            "memory://b",
            "filter = \"string(raw).matches('(unclosed')\"",
        ),
        route(
            8,
            "memory://",
            "memory://b",
            "transform = { stream = 'payload.n > 1' }",
        ),
    ];
    let (code, out) = validate(dir.path(), "bad.toml", &routes.concat(), &[]);
    println!("{out}");
    assert_eq!(code, Some(2), "{out}");
    for needle in [
        "`route[0].source.url`: unknown URL scheme `kafak://`",
        "`route[1].source.url`: option `fsync`",
        "`route[2].source.url`",
        "memory URLs take no path",
        "`route[3].sink.url`",
        "no.such.setting",
        "`route[4].sink.url`: unknown option `partitons`",
        "`route[5].filter`",
        "`route[6].filter`: `42` gives a int whatever the event, not a bool",
        "`route[7].filter`",
        "does not compile",
        "`route[8].transform.stream`",
        "9 problems",
    ] {
        assert!(out.contains(needle), "missing {needle}:\n{out}");
    }
}

#[test]
fn validate_names_every_unknown_key_and_wrong_type_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = "[daemon]\nlisten = 9464\ncolour = \"blue\"\n\n[[route]]\nname = \"a\"\nin_flight = \"many\"\nbogus = 1\nsource = { url = \"memory://\", stream = \"in\", grup = \"g\", strat = \"x\" }\nsink = { url = \"memory://b\", stream = \"out\" }\nretry = { attempts = \"five\", backof = \"1s\" }\nbatch = { linger = \"soon\" }\n";
    let (code, out) = validate(dir.path(), "keys.toml", file, &[]);
    println!("{out}");
    assert_eq!(code, Some(2), "{out}");
    for needle in [
        "`daemon.listen`: expected a string",
        "`daemon.colour`: unknown key",
        "`route[0].in_flight`: expected a non-negative integer",
        "`route[0].bogus`: unknown key",
        "`route[0].source.grup`: unknown key (did you mean `group`?)",
        "`route[0].source.strat`: unknown key (did you mean `start`?)",
        "`route[0].retry.attempts`: expected a non-negative integer",
        "`route[0].retry.backof`: unknown key (did you mean `backoff`?)",
        "`route[0].batch.linger`: `soon` is not a duration",
    ] {
        assert!(out.contains(needle), "missing {needle}:\n{out}");
    }
    let (code, out) = validate(
        dir.path(),
        "syntax.toml",
        "[daemon]\nlisten = \"x\"\n[[route]\nname = \"a\"\n",
        &[],
    );
    println!("{out}");
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("line 3"),
        "a TOML syntax error says where: {out}"
    );
}

//! The checks of the configuration, through the public parser.

use super::*;

fn env(name: &str) -> Option<String> {
    (name == "BROKERS").then(|| "127.0.0.1:9092".to_string())
}

#[test]
fn a_full_file_parses() {
    let plan = parse(
        r#"
            [daemon]
            listen = "127.0.0.1:0"
            [[route]]
            name = "a"
            source = { url = "memory://x", stream = "in" }
            sink = { url = "kafka://${BROKERS}", stream = "out" }
            dead_letter = { url = "memory://x", stream = "dlq" }
            retry = { attempts = 3 }
            "#,
        &env,
    )
    .unwrap();
    assert_eq!(plan.routes.len(), 1);
    assert_eq!(plan.routes[0].sink_url, "kafka://127.0.0.1:9092");
    assert_eq!(plan.routes[0].retry.attempts, 3);
    assert_eq!(plan.routes[0].max_events, 2000);
    assert!(plan.routes[0].dead_letter.is_some());
}

#[test]
fn every_problem_is_named_with_its_path() {
    let e = parse(
        r#"
            [daemon]
            listen = "nowhere"
            [[route]]
            name = "a"
            source = { url = "memory://x", stream = "in", start = "@yesterday" }
            sink = { url = "kafka://${MISSING}", stream = "out" }
            batch = { max_events = 0, linger = "soon" }
            retry = { jitter = 2.0 }
            [[route]]
            name = "a"
            source = { url = "not a url", stream = "in" }
            sink = { url = "memory://y", stream = "" }
            key = "hash"
            "#,
        &env,
    )
    .unwrap_err()
    .to_string();
    for needle in [
        "`daemon.listen`",
        "`route[0].source.start`",
        "`route[0].sink.url`: environment variable `MISSING`",
        "`route[0].batch.max_events`",
        "`route[0].batch.linger`",
        "`route[0].retry.jitter`",
        "`route[1].name`: `a` is used by another route",
        "`route[1].source.url`",
        "`route[1].sink.stream`",
        "`route[1].key`",
    ] {
        assert!(e.contains(needle), "missing {needle} in:\n{e}");
    }
}

#[test]
fn filter_and_transform_problems_name_their_path() {
    let e = parse(
        r#"
            [[route]]
            name = "a"
            source = { url = "memory://x", stream = "in" }
            sink = { url = "memory://x", stream = "out" }
            filter = "payload.n >"
            transform = { key = "paylod.user", set_headers = { tier = "1 +" } }
            "#,
        &env,
    )
    .unwrap_err()
    .to_string();
    for needle in [
        "`route[0].filter`: `payload.n >` is not a valid CEL expression",
        "`route[0].transform.key`: `paylod.user` uses `paylod`",
        "`route[0].transform.set_headers.tier`",
    ] {
        assert!(e.contains(needle), "missing {needle} in:\n{e}");
    }
    let plan = parse(
        r#"
            [[route]]
            name = "a"
            source = { url = "kafka://10.0.0.1:9092,10.0.0.2:9092", stream = "in", cluster = "eu" }
            sink = { url = "memory://x", stream = "out" }
            filter = "has(payload.n)"
            transform = { stream = "'out-' + string(payload.n)" }
            "#,
        &env,
    )
    .unwrap();
    assert!(plan.routes[0].transform.is_some());
    assert_eq!(plan.routes[0].source_identity, "eu/in");
    assert_eq!(plan.routes[0].sink_identity, "memory://x/out");
}

#[test]
fn unknown_and_mistyped_fields_name_their_path() {
    let e = parse("[[route]]\nname = \"a\"\nsource = { url = \"memory://\", stream = \"s\", grup = \"g\" }\nsink = { url = \"memory://\", stream = \"t\" }\n", &env)
            .unwrap_err()
            .to_string();
    assert!(e.contains("route[0].source") && e.contains("grup"), "{e}");
    let e = parse("[[route]]\nname = \"a\"\nin_flight = \"many\"\nsource = { url = \"memory://\", stream = \"s\" }\nsink = { url = \"memory://\", stream = \"t\" }\n", &env)
            .unwrap_err()
            .to_string();
    assert!(e.contains("route[0].in_flight"), "{e}");
    assert!(
        parse("this is = not toml [", &env)
            .unwrap_err()
            .to_string()
            .contains("TOML")
    );
}

#[test]
fn yaml_describes_the_same_configuration() {
    let yaml = parse_as(
        Format::Yaml,
        r#"
daemon:
  listen: off
  log_format: json
route:
  - name: a
    source: { url: "memory://x", stream: in, start: "2024-01-01T00:00:00Z" }
    sink:
      url: kafka://${BROKERS}
      stream: out
    batch: { max_events: 100, max_bytes: 64KiB, linger: 2ms }
    retry: { attempts: 3 }
    filter: has(payload.n)
    transform:
      key: payload.user
      set_headers: { tier: "'gold'" }
"#,
        &env,
    )
    .unwrap();
    let toml = parse(
        r#"
            [daemon]
            listen = "off"
            log_format = "json"
            [[route]]
            name = "a"
            source = { url = "memory://x", stream = "in", start = "2024-01-01T00:00:00Z" }
            sink = { url = "kafka://${BROKERS}", stream = "out" }
            batch = { max_events = 100, max_bytes = "64KiB", linger = "2ms" }
            retry = { attempts = 3 }
            filter = "has(payload.n)"
            transform = { key = "payload.user", set_headers = { tier = "'gold'" } }
            "#,
        &env,
    )
    .unwrap();
    // Plans hold compiled expressions: compare what they decide, field by field.
    assert_eq!(yaml.listen, toml.listen);
    assert_eq!(yaml.listen, None);
    assert!(yaml.log_json && toml.log_json);
    let (y, t) = (&yaml.routes[0], &toml.routes[0]);
    assert_eq!(y.sink_url, "kafka://127.0.0.1:9092");
    assert_eq!(
        (
            &y.sink_url,
            &y.source_stream,
            y.max_events,
            y.max_bytes,
            y.linger
        ),
        (
            &t.sink_url,
            &t.source_stream,
            t.max_events,
            t.max_bytes,
            t.linger
        )
    );
    assert_eq!(format!("{:?}", y.start), format!("{:?}", t.start));
    assert_eq!(y.retry.attempts, 3);
    assert_eq!(
        y.transform.as_ref().map(|t| t.summary()),
        t.transform.as_ref().map(|t| t.summary())
    );
}

#[test]
fn yaml_problems_name_their_path() {
    let e = parse_as(
            Format::Yaml,
            "route:\n  - name: a\n    source: { url: 'memory://', stream: s, grup: g }\n    sink: { url: 'memory://', stream: t }\n",
            &env,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("route[0].source") && e.contains("grup"), "{e}");
    let e = parse_as(
            Format::Yaml,
            "route:\n  - name: a\n    in_flight: many\n    source: { url: 'memory://', stream: s }\n    sink: { url: 'memory://', stream: t }\n",
            &env,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("route[0].in_flight"), "{e}");
    let e = parse_as(Format::Yaml, "", &env).unwrap_err().to_string();
    assert!(e.contains("no route"), "{e}");
    let e = parse_as(Format::Yaml, "route: [\n", &env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("line"), "a syntax error says where: {e}");
    assert_eq!(Format::of(Path::new("bridge.yml")), Format::Yaml);
    assert_eq!(Format::of(Path::new("bridge.YAML")), Format::Yaml);
    assert_eq!(Format::of(Path::new("bridge.toml")), Format::Toml);
    assert_eq!(Format::of(Path::new("bridge")), Format::Toml);
}

#[test]
fn secrets_in_urls_are_not_echoed() {
    let e = parse(
            "[[route]]\nname = \"a\"\nsource = { url = \"memory://u:hunter2@x\", stream = \"s\" }\nsink = { url = \"memory://u:hunter2@x\", stream = \"s\" }\n",
            &env,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("the sink is the source"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}

use super::*;
use tributary::Timestamp;

fn origin() -> Origin<'static> {
    Origin {
        backend: "kafka",
        stream: "orders",
        partition: Some("3"),
        position: Some("42"),
    }
}

fn keep(t: &Transform, e: Event) -> (Event, Option<String>) {
    match t.apply(&origin(), e).unwrap() {
        Outcome::Keep { event, stream } => (event, stream),
        Outcome::Drop => panic!("dropped"),
    }
}

fn spec(filter: &str) -> TransformSpec {
    TransformSpec {
        filter: Some(filter.into()),
        ..Default::default()
    }
}

#[test]
fn filters_see_key_headers_timestamp_payload_and_source() {
    let event = Event::new(r#"{"n": 7, "tags": ["a", "b"]}"#)
        .with_key("k1")
        .with_header("type", "order")
        .with_timestamp(Timestamp::from_millis(1_700_000_000_000));
    for (expr, expected) in [
        ("key == 'k1'", true),
        ("headers['type'] == 'order'", true),
        ("'missing' in headers", false),
        ("payload.n > 5 && 'b' in payload.tags", true),
        ("timestamp > timestamp('2023-01-01T00:00:00Z')", true),
        ("source.stream == 'orders' && source.partition == '3'", true),
        ("size(raw) == 28", true),
        ("headers.exists(h, h.startsWith('ty'))", true),
    ] {
        let t = Transform::compile(&spec(expr)).unwrap();
        let kept = matches!(
            t.apply(&origin(), event.clone()).unwrap(),
            Outcome::Keep { .. }
        );
        assert_eq!(kept, expected, "{expr}");
    }
}

#[test]
fn transforms_rewrite_stream_key_and_headers() {
    let t = Transform::compile(&TransformSpec {
        stream: Some("payload.kind == 'refund' ? 'refunds' : null".into()),
        key: Some("string(payload.user)".into()),
        set_headers: vec![
            ("kind".into(), "payload.kind".into()),
            ("big".into(), "payload.amount > 10".into()),
            ("drop-me".into(), "null".into()),
        ],
        remove_headers: vec!["secret".into()],
        ..Default::default()
    })
    .unwrap();
    let (e, stream) = keep(
        &t,
        Event::new(r#"{"kind": "refund", "user": 12, "amount": 3}"#)
            .with_key("old")
            .with_header("secret", "x")
            .with_header("drop-me", "y")
            .with_header("kept", "z"),
    );
    assert_eq!(stream.as_deref(), Some("refunds"));
    assert_eq!(e.key.as_deref(), Some(&b"12"[..]));
    let headers: Vec<(&str, &[u8])> = e.headers.iter().map(|(k, v)| (k, &v[..])).collect();
    assert_eq!(
        headers,
        [("kept", &b"z"[..]), ("kind", b"refund"), ("big", b"false")]
    );
    let (_, stream) = keep(
        &t,
        Event::new(r#"{"kind": "sale", "user": 1, "amount": 3}"#),
    );
    assert_eq!(stream, None);
}

#[test]
fn a_null_key_removes_it_and_binary_keys_are_bytes() {
    let t = Transform::compile(&TransformSpec {
        key: Some("null".into()),
        filter: Some("type(key) == bytes".into()),
        ..Default::default()
    })
    .unwrap();
    let (e, _) = keep(&t, Event::new("x").with_key(vec![0xff, 0xfe]));
    assert!(e.key.is_none());
}

#[test]
fn compile_errors_name_the_field_and_unknown_variables() {
    let problems = Transform::compile(&TransformSpec {
        filter: Some("paylod.n > 1".into()),
        stream: Some("'a' +".into()),
        set_headers: vec![("h".into(), "headerz['x']".into())],
        ..Default::default()
    })
    .unwrap_err();
    let all = problems.join("\n");
    assert!(
        all.contains("filter: `paylod.n > 1` uses `paylod`"),
        "{all}"
    );
    assert!(
        all.contains("transform.stream: `'a' +` is not a valid CEL"),
        "{all}"
    );
    assert!(all.contains("transform.set_headers.h"), "{all}");
    assert_eq!(problems.len(), 3, "{all}");
}

#[test]
fn runtime_failures_are_errors_naming_the_expression_not_panics() {
    let t = Transform::compile(&spec("payload.amount > 10")).unwrap();
    // Not JSON: payload is null, and reading a field of null fails.
    let e = t.apply(&origin(), Event::new("not json")).unwrap_err();
    assert_eq!(e.kind(), tributary::ErrorKind::Config);
    assert!(
        e.to_string()
            .contains("filter `payload.amount > 10` failed"),
        "{e}"
    );
    let t = Transform::compile(&spec("payload.flag")).unwrap();
    let e = t
        .apply(&origin(), Event::new(r#"{"flag": "yes"}"#))
        .unwrap_err();
    assert!(e.to_string().contains("not a bool"), "{e}");
    let t = Transform::compile(&TransformSpec {
        stream: Some("payload.n".into()),
        ..Default::default()
    })
    .unwrap();
    let e = t.apply(&origin(), Event::new(r#"{"n": 42}"#)).unwrap_err();
    assert!(e.to_string().contains("transform.stream"), "{e}");
}

#[test]
fn what_fails_every_event_is_refused_at_compile_time() {
    for (spec, needle) in [
        (
            spec("42"),
            "filter: `42` gives a int whatever the event, not a bool",
        ),
        (spec("'yes'"), "gives a string whatever the event"),
        (
            spec("1 + 'a'"),
            "filter: `1 + 'a'` a part of it that does not depend on the event fails",
        ),
        (
            spec("key == 'a' || 1 / 0 == 1"),
            "does not depend on the event fails",
        ),
        (
            spec("string(raw).matches('(unclosed')"),
            "regular expression `(unclosed` does not compile",
        ),
        (spec("payload.n + 1"), "gives a"),
        (
            TransformSpec {
                stream: Some("payload.n > 1".into()),
                ..Default::default()
            },
            "transform.stream: `payload.n > 1` gives a bool whatever the event, not a string or null",
        ),
        (
            TransformSpec {
                key: Some("[payload.id]".into()),
                ..Default::default()
            },
            "transform.key: `[payload.id]` gives a list",
        ),
    ] {
        let problems = Transform::compile(&spec).unwrap_err().join("\n");
        assert!(problems.contains(needle), "{needle}: {problems}");
    }
    for fine in [
        "payload.n > 1",
        "has(payload.n) ? payload.n > 1 : false",
        "string(raw).matches('^[a-z]+$')",
        "[1, 2].exists(x, x == payload.n)",
        "timestamp > timestamp('2023-01-01T00:00:00Z')",
    ] {
        Transform::compile(&spec(fine)).unwrap_or_else(|e| panic!("{fine}: {e:?}"));
    }
}

#[test]
fn an_event_over_the_budget_fails_with_the_reason() {
    let six_maps = "size([1,2,3,4,5,6,7,8,9,10].map(a, [1,2,3,4,5,6,7,8,9,10].map(b, [1,2,3,4,5,6,7,8,9,10].map(c, [1,2,3,4,5,6,7,8,9,10].map(d, [1,2,3,4,5,6,7,8,9,10].map(e, [1,2,3,4,5,6,7,8,9,10].map(f, a + b + c + d + e + f))))))) > 0";
    let t = Transform::compile(&spec(six_maps)).unwrap();
    let started = std::time::Instant::now();
    let e = t.apply(&origin(), Event::new("x")).unwrap_err();
    assert!(e.to_string().contains(OVER_BUDGET), "{e}");
    println!("refused after {:?}: {e}", started.elapsed());
    // Whichever comes first, steps or time: with time to spare, the steps stop it.
    let t = t.with_budget(Budget {
        steps: 100_000,
        time: std::time::Duration::from_secs(600),
    });
    let e = t.apply(&origin(), Event::new("x")).unwrap_err();
    assert!(e.to_string().contains("100000 comprehension steps"), "{e}");
    // A budget in time stops it too, and a large enough one lets it through.
    let t = t.with_budget(Budget {
        steps: u64::MAX,
        time: std::time::Duration::from_millis(20),
    });
    let e = t.apply(&origin(), Event::new("x")).unwrap_err();
    assert!(e.to_string().contains("more than 20ms"), "{e}");
    let small = Transform::compile(&spec("[1, 2, 3].map(x, [1, 2].map(y, x * y)).size() == 3"))
        .unwrap()
        .with_budget(Budget {
            steps: 9,
            time: std::time::Duration::from_secs(10),
        });
    assert!(matches!(
        small.apply(&origin(), Event::new("x")),
        Ok(Outcome::Keep { .. })
    ));
    let e = small
        .with_budget(Budget {
            steps: 8,
            time: std::time::Duration::from_secs(10),
        })
        .apply(&origin(), Event::new("x"))
        .unwrap_err();
    assert!(e.to_string().contains(OVER_BUDGET), "{e}");
}

#[test]
fn the_payload_is_not_parsed_unless_read() {
    let t = Transform::compile(&spec("key == 'a'")).unwrap();
    assert!(!t.reads_payload);
    let t = Transform::compile(&spec("has(payload.a)")).unwrap();
    assert!(t.reads_payload);
}

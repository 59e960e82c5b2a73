//! Hostile configuration files: expressions built to overflow the parser's or the evaluator's
//! stack, and files too big or too deep to read. `bridge validate` and the daemon refuse each
//! with a configuration error (exit 2) naming where the problem is; nothing crashes, nothing
//! takes long, and no message echoes megabytes back.

mod harness;

use std::time::{Duration, Instant};

use harness::{run, validate};

fn route_with_filter(filter: &str) -> String {
    format!(
        "[[route]]\nname = \"hostile\"\nsource = {{ url = \"memory://\", stream = \"in\" }}\nsink = {{ url = \"memory://\", stream = \"out\" }}\nfilter = '''{filter}'''\n"
    )
}

fn refused(name: &str, contents: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (code, out) = validate(dir.path(), name, contents, &[]);
    let took = started.elapsed();
    let shown: String = out.chars().take(600).collect();
    println!(
        "{name}: exit {code:?} after {took:?}, {} bytes of output: {shown}",
        out.len()
    );
    assert_eq!(
        code,
        Some(2),
        "{name}: a configuration error, not a crash: {shown}"
    );
    for needle in needles {
        assert!(out.contains(needle), "{name}: no `{needle}` in: {shown}");
    }
    assert!(out.len() < 4096, "{name}: {} bytes of output", out.len());
    assert!(took < Duration::from_secs(20), "{name}: took {took:?}");
}

#[test]
fn a_long_plus_chain_is_refused() {
    let chain = vec!["1"; 6000].join(" + ");
    refused(
        "plus.toml",
        &route_with_filter(&format!("{chain} > 0")),
        &["route[0].filter"],
    );
}

#[test]
fn a_long_member_chain_is_refused() {
    let chain = format!("has(payload{})", ".a".repeat(20_000));
    refused(
        "member.toml",
        &route_with_filter(&chain),
        &["route[0].filter"],
    );
}

#[test]
fn deeply_nested_parentheses_are_refused() {
    let nested = format!("{}true{}", "(".repeat(65_535), ")".repeat(65_535));
    refused(
        "parens.toml",
        &route_with_filter(&nested),
        &["route[0].filter"],
    );
}

#[test]
fn other_deep_shapes_are_refused_or_accepted_without_crashing() {
    // Shapes whose parser or evaluator recurses: every one is either compiled or refused.
    let shapes = [
        format!("{}true", "!".repeat(5_000)),
        format!("{}1 > 0", "-".repeat(5_000)),
        format!("{}true", "true ? ".repeat(3_000) + &"false : ".repeat(0)),
        vec!["true ? false"; 2_000].join(" : ") + " : true",
        format!("{}1{}", "[".repeat(5_000), "]".repeat(5_000)),
        format!("{}1{} == 1", "size([".repeat(3_000), "])".repeat(3_000)),
        vec!["true"; 5_000].join(" && "),
        format!("{}1{}", "{1: ".repeat(3_000), "}".repeat(3_000)),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, shape) in shapes.iter().enumerate() {
        let (code, out) = validate(
            dir.path(),
            &format!("shape{i}.toml"),
            &route_with_filter(shape),
            &[],
        );
        let shown: String = out.chars().take(300).collect();
        println!("shape {i} ({} bytes): exit {code:?}: {shown}", shape.len());
        assert!(
            matches!(code, Some(0 | 2)),
            "shape {i}: exit {code:?}: {shown}"
        );
        assert!(out.len() < 4096, "shape {i}: {} bytes of output", out.len());
    }
}

#[test]
fn a_huge_filter_is_refused_with_a_short_message() {
    let huge = format!("'{}' == string(raw)", "x".repeat(900 << 10));
    refused(
        "huge.toml",
        &route_with_filter(&huge),
        &["route[0].filter", "bytes"],
    );
}

#[test]
fn a_huge_file_is_refused_unread() {
    let huge = format!("'{}' == string(raw)", "x".repeat(50 << 20));
    refused("huge.toml", &route_with_filter(&huge), &["larger than"]);
}

#[test]
fn deeply_nested_yaml_is_refused_quickly() {
    let depth = 200_000;
    let yaml = format!(
        "route:\n  - name: a\n    x: {}1{}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    refused("deep.yaml", &yaml, &["nest"]);
}

#[test]
fn deeply_nested_toml_is_refused_quickly() {
    let depth = 200_000;
    let toml = format!("x = {}1{}\n", "[".repeat(depth), "]".repeat(depth));
    refused("deep.toml", &toml, &["nest"]);
}

#[test]
fn an_endless_file_is_not_read_to_its_end() {
    let started = Instant::now();
    let (code, out) = run(&["bridge", "validate", "/dev/zero"], &[], "");
    let shown: String = out.chars().take(600).collect();
    println!(
        "/dev/zero: exit {code:?} after {:?}: {shown}",
        started.elapsed()
    );
    assert_eq!(code, Some(2), "{shown}");
    assert!(out.contains("larger than"), "{shown}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

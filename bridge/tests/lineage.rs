//! Whether lineage headers from outside are trusted (issue 17 defect 13). They are, by
//! default: a `tributary-path` naming the sink stream stops the copy, wherever the header came
//! from, because a bridge cannot tell its own header from an application's and loop prevention
//! across bridges in other processes depends on it. A route reading a stream that applications
//! write directly can say `lineage = "reset"`: it ignores what it finds and starts the path
//! afresh.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tributary::{Backend, ConsumerOptions, Event, StartPosition};
use tributary_bridge::route::{self, CancellationToken, RouteSpec, RouteStats, lineage};

async fn copy(name: &str, reset: bool, events: Vec<Event>) -> (Vec<Event>, Arc<RouteStats>) {
    let source = tributary::connect(&format!("memory://{name}-source"))
        .await
        .unwrap();
    let sink = tributary::connect(&format!("memory://{name}-sink"))
        .await
        .unwrap();
    let n = events.len() as u64;
    source
        .producer("in")
        .await
        .unwrap()
        .send_batch(events)
        .await
        .unwrap();
    let mut spec = RouteSpec::new(name, source.clone(), "in", sink.clone(), "out");
    spec.source_identity = "place-a/in".into();
    spec.sink_identity = "place-b/out".into();
    spec.reset_lineage = reset;
    let stats = Arc::new(RouteStats::default());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(route::run_route(spec, stats.clone(), cancel.clone()));
    tokio::time::timeout(Duration::from_secs(20), async {
        while stats.replicated.load(Ordering::Relaxed) + stats.looped.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not every event was handled: {stats}"));
    cancel.cancel();
    task.await.unwrap().unwrap();
    let copied = read_all(&sink, stats.replicated.load(Ordering::Relaxed)).await;
    (copied, stats)
}

async fn read_all(sink: &Arc<dyn Backend>, n: u64) -> Vec<Event> {
    let consumer = sink
        .consumer(
            "out",
            ConsumerOptions::new("check").start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    while (out.len() as u64) < n {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.receive())
            .await
            .expect("the copies arrive")
            .unwrap();
        out.push(d.event.clone());
        d.ack();
    }
    consumer.close().await.unwrap();
    out
}

fn path(e: &Event) -> String {
    String::from_utf8_lossy(e.headers.get(lineage::PATH).map(|v| &v[..]).unwrap_or(b"")).into()
}

fn events() -> Vec<Event> {
    vec![
        Event::new("no path"),
        Event::new("elsewhere").with_header(lineage::PATH, "place-c/x"),
        Event::new("claims the sink").with_header(lineage::PATH, "place-b/out"),
        Event::new("claims it mid-path")
            .with_header(lineage::PATH, "place-c/x,place-b/out,place-d/y"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_from_outside_is_trusted_by_default() {
    let (copied, stats) = copy("trusted", false, events()).await;
    assert_eq!(stats.looped.load(Ordering::Relaxed), 2, "{stats}");
    // Unkeyed events spread over the stream's partitions: their order is not promised.
    let mut paths: Vec<(String, String)> = copied
        .iter()
        .map(|e| (String::from_utf8_lossy(&e.payload).into_owned(), path(e)))
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            ("elsewhere".to_string(), "place-c/x,place-a/in".to_string()),
            ("no path".into(), "place-a/in".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_resets_lineage_copies_everything_with_a_fresh_path() {
    let (copied, stats) = copy("reset", true, events()).await;
    assert_eq!(stats.looped.load(Ordering::Relaxed), 0, "{stats}");
    assert_eq!(copied.len(), 4);
    for e in &copied {
        assert_eq!(path(e), "place-a/in", "{:?}", e.payload);
    }
}

/// The headers of a copy, in order, values as text.
fn headers(e: &Event) -> Vec<(String, String)> {
    e.headers
        .iter()
        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

/// An event's own headers stay first and in order, the two lineage headers follow once each;
/// lineage headers an earlier hop wrote are replaced where they stand, never duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lineage_headers_follow_the_events_own_and_replace_stale_ones() {
    let events = vec![
        Event::new("fresh")
            .with_header("app", "1")
            .with_header("app", "2")
            .with_header("other", "x"),
        Event::new("hopped")
            .with_header("app", "1")
            .with_header(
                lineage::ORIGIN,
                "route=an earlier route;backend=kafka;stream=s;partition=7;position=9",
            )
            .with_header("after", "y"),
    ];
    let (copied, _) = copy("header-order", false, events).await;
    assert_eq!(copied.len(), 2);
    for e in &copied {
        let got = headers(e);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        let value = |name: &str| {
            let all: Vec<&str> = got
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(all.len(), 1, "{name} once: {got:?}");
            all[0].to_string()
        };
        let origin = lineage::Origin::parse(value(lineage::ORIGIN).as_bytes()).unwrap();
        assert_eq!(origin.route, "header-order");
        assert_eq!(origin.backend, "memory");
        assert_eq!(origin.stream, "in");
        assert_eq!(value(lineage::PATH), "place-a/in");
        let position = origin.position.expect("a position");
        assert!(position.parse::<u64>().is_ok(), "{got:?}");
        let partition = origin.partition.expect("a partition");
        assert!(partition.parse::<u32>().is_ok(), "{got:?}");
        match &e.payload[..] {
            b"fresh" => assert_eq!(
                names,
                ["app", "app", "other", lineage::ORIGIN, lineage::PATH]
            ),
            b"hopped" => assert_eq!(names, ["app", lineage::ORIGIN, "after", lineage::PATH]),
            other => panic!("unexpected copy {other:?}"),
        }
    }
}

/// The origin header reads back what the route wrote, whatever its values hold: a `;` or `%`
/// in a stream, partition or position cannot shift or merge its fields.
#[test]
fn origin_fields_survive_separators_in_their_values() {
    let origin = lineage::Origin::parse(
        b"route=r%3B1;backend=memory;stream=a%3Bb%25c;partition=p=1;position=5%3B6",
    )
    .unwrap();
    assert_eq!(origin.route, "r;1");
    assert_eq!(origin.stream, "a;b%c");
    assert_eq!(origin.partition.as_deref(), Some("p=1"));
    assert_eq!(origin.position.as_deref(), Some("5;6"));
    // A source without partitions or positions (Pub/Sub) leaves them out.
    let bare = lineage::Origin::parse(b"route=r;backend=pubsub;stream=s").unwrap();
    assert_eq!((bare.partition, bare.position), (None, None));
    // Not an origin: missing fields, a broken escape, not UTF-8.
    for bad in [
        &b"route=r;backend=kafka"[..],
        b"route=r;backend=kafka;stream=%4",
        b"route=r;backend=kafka;stream=\xff",
        b"plain text",
    ] {
        assert_eq!(lineage::Origin::parse(bad), None, "{bad:?}");
    }
}

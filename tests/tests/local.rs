//! The conformance suite against both local flavours, plus their capability snapshots.

use std::sync::Arc;
use tributary::{AckModel, Backend, Capabilities, Ordering};
use tributary_conformance::{Harness, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_conformance() {
    let report = run(&Harness::new("memory", "memory://")).await;
    // In-process: no server to be unreachable, none to restart.
    report.assert_conforms(&["unreachable_server", "server_restart"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_backend_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let reopen_url = url.clone();
    let harness =
        Harness::new("file", &url).with_restart(Arc::new(move |old: Arc<dyn Backend>| {
            let url = reopen_url.clone();
            Box::pin(async move {
                // A restart of the embedded "server": close (releasing the directory lock) and
                // open the same directory again, recovering segments and group commits from disk.
                old.close().await?;
                drop(old);
                tributary::connect(&url).await
            })
        }));
    let report = run(&harness).await;
    report.assert_conforms(&["unreachable_server"]);
}

/// Pins the declaration so a forgotten flag cannot silently skip a group of cases.
fn snapshot(c: &Capabilities) -> String {
    format!("{c:?}")
}

#[tokio::test]
async fn capability_snapshots() {
    let memory = tributary::connect("memory://")
        .await
        .unwrap()
        .capabilities();
    let expected = "Capabilities { native_headers: true, timestamps: true, ordering: PerKey, ack: Cumulative, nack: true, delivery_attempts: true, start: StartSupport { earliest: true, latest: true, timestamp: true, position: true }, receipts: ReceiptSupport { partition: true, position: true }, max_event_bytes: Some(1048576), lifecycle: Lifecycle { auto_create: true, networked: false, competing_consumers: true }, lag: true, admin: true }";
    assert_eq!(snapshot(&memory), expected);
    let dir = tempfile::tempdir().unwrap();
    let file = tributary::connect(&format!("file://{}", dir.path().display()))
        .await
        .unwrap()
        .capabilities();
    assert_eq!(snapshot(&file), expected);
    assert_eq!(memory.ack, AckModel::Cumulative);
    assert_eq!(memory.ordering, Ordering::PerKey);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_streams_report_not_found() {
    let report = tributary_conformance::run_filtered(
        &Harness::new("memory-strict", "memory://?auto_create=false"),
        |name| name == "missing_stream",
    )
    .await;
    report.assert_conforms(&[]);
    assert_eq!(report.passed(), 1, "{}", report.table());
}

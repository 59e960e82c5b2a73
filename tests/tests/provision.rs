//! A backend whose data plane cannot create streams (as Event Hubs): without a provisioning
//! hook the cases that need fresh streams are not applicable, by name; with one, they run on
//! the streams the hook makes, and pass.

use async_trait::async_trait;
use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tributary::{
    Backend, Capabilities, Consumer, ConsumerOptions, Error, Producer, Result, StreamInfo,
    StreamSpec,
};
use tributary_conformance::{Harness, StreamRequest, catalogue, run};

/// `memory://` without `admin`: creating streams is refused, as on a data plane without a
/// management API. Streams exist only if something else made them.
#[derive(Debug)]
struct NoAdmin(Arc<dyn Backend>);

#[async_trait]
impl Backend for NoAdmin {
    fn scheme(&self) -> &'static str {
        self.0.scheme()
    }
    fn capabilities(&self) -> Capabilities {
        let mut caps = self.0.capabilities();
        caps.admin = false;
        caps.lifecycle.auto_create = false;
        caps
    }
    async fn producer(&self, stream: &str) -> Result<Box<dyn Producer>> {
        self.0.producer(stream).await
    }
    async fn consumer(&self, stream: &str, options: ConsumerOptions) -> Result<Box<dyn Consumer>> {
        self.0.consumer(stream, options).await
    }
    async fn create_stream(&self, stream: &str, _: StreamSpec) -> Result<()> {
        Err(Error::unsupported(format!(
            "cannot create `{stream}`: streams are made outside the data plane"
        )))
    }
    async fn delete_stream(&self, stream: &str) -> Result<()> {
        Err(Error::unsupported(format!("cannot delete `{stream}`")))
    }
    async fn list_streams(&self) -> Result<Vec<String>> {
        self.0.list_streams().await
    }
    async fn describe_stream(&self, stream: &str) -> Result<StreamInfo> {
        self.0.describe_stream(stream).await
    }
    async fn close(&self) -> Result<()> {
        self.0.close().await
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One named in-process instance, shared by the harness's backend and the "management API"
/// that provisions streams beside it.
fn harness(instance: &str) -> Harness {
    let url = format!("memory://{instance}?auto_create=false");
    let connect_url = url.clone();
    Harness::new("memory-no-admin", &url).with_connect(Arc::new(move || {
        let url = connect_url.clone();
        Box::pin(async move {
            let inner = tributary::connect(&url).await?;
            Ok(Arc::new(NoAdmin(inner)) as Arc<dyn Backend>)
        })
    }))
}

/// Cases that make no streams of their own, plus the ones memory:// never runs.
const RUN_WITHOUT_STREAMS: &[&str] = &["missing_stream", "bad_configuration"];
const NEVER_ON_MEMORY: &[&str] = &["unreachable_server", "server_restart"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_admin_or_a_hook_the_stream_cases_are_not_applicable() {
    let report = run(&harness("no-admin-no-hook")).await;
    let expected: Vec<&str> = catalogue()
        .iter()
        .map(|c| c.name)
        .filter(|n| !RUN_WITHOUT_STREAMS.contains(n))
        .collect();
    report.assert_conforms(&expected);
    assert!(
        report.table().contains("no provisioning hook"),
        "{}",
        report.table()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_provisioning_hook_every_case_runs_on_its_streams() {
    let instance = "no-admin-with-hook";
    let provisioned = Arc::new(AtomicUsize::new(0));
    let counter = provisioned.clone();
    let harness = harness(instance).with_provision(Arc::new(move |request: StreamRequest| {
        let counter = counter.clone();
        Box::pin(async move {
            // The "management API": the same instance, reached without the wrapper.
            let admin = tributary::connect(&format!("memory://{instance}")).await?;
            let name = format!("provisioned-{}", request.name);
            admin
                .create_stream(&name, StreamSpec::with_partitions(request.partitions))
                .await?;
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(name)
        })
    }));
    let report = run(&harness).await;
    report.assert_conforms(NEVER_ON_MEMORY);
    let cases_with_streams = catalogue().len() - RUN_WITHOUT_STREAMS.len() - NEVER_ON_MEMORY.len();
    assert!(
        provisioned.load(Ordering::Relaxed) >= cases_with_streams,
        "{} streams provisioned for {cases_with_streams} cases",
        provisioned.load(Ordering::Relaxed)
    );
}

//! Failure: unreachable and restarted servers, missing streams, bad configuration, cancellation.

use super::support::*;
use std::time::{Duration, Instant};
use tributary::{
    ConsumerExt, ConsumerOptions, Delivery, ErrorKind, Event, StartPosition, StreamSpec,
};

/// Sending to a server that is not there fails within 60 s with an unavailable or timeout error; it never hangs.
pub(crate) async fn unreachable_server(c: &mut Ctx) -> CaseOutcome {
    let url = c.harness.unreachable_url.clone().expect("gated");
    let started = Instant::now();
    let attempt = async {
        let backend = tributary::connect(&url).await?;
        let producer = backend.producer("conf-unreachable").await?;
        producer.send(Event::new("x")).await
    };
    match tokio::time::timeout(Duration::from_secs(60), attempt).await {
        Err(_) => Err("still hanging after 60 s".into()),
        Ok(Ok(_)) => Err("sending to an unreachable server succeeded".into()),
        Ok(Err(e)) => {
            ensure!(
                matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
                "expected unavailable or timeout, got {e}"
            );
            Ok(Some(format!(
                "failed after {:.1}s: {e}",
                started.elapsed().as_secs_f64()
            )))
        }
    }
}

/// Sends and receives resume after the server restarts, and the group keeps its committed progress.
pub(crate) async fn server_restart(c: &mut Ctx) -> CaseOutcome {
    let restart = c.harness.restart.clone().expect("gated");
    let stream = c.stream("restart", 1).await?;
    let group = c.name("g");
    let before = numbered("pre", 5);
    {
        let producer = c.producer(&stream).await?;
        let consumer = c.consumer(&stream, &group, StartPosition::Earliest).await?;
        producer.send_batch(before.clone()).await.check("send")?;
        producer.close().await.check("close producer")?;
        let got = receive_n(consumer.as_ref(), 5).await?;
        ack_all(got);
        consumer.close().await.check("close consumer")?;
    }
    c.backend = restart(c.backend.clone()).await.check("restart")?;
    let after = numbered("post", 5);
    let producer = c.producer(&stream).await?;
    producer
        .send_batch(after.clone())
        .await
        .check("send after restart")?;
    let consumer = c.consumer(&stream, &group, StartPosition::Earliest).await?;
    let got = receive_n(consumer.as_ref(), 5).await?;
    same_set(&payloads(&got), &after).map_err(|e| format!("after restart: {e}"))?;
    ack_all(got);
    expect_quiet(consumer.as_ref()).await?;
    Ok(None)
}

/// Sending to or consuming a missing stream fails with a not-found error naming it, or creates it where auto-create is declared.
pub(crate) async fn missing_stream(c: &mut Ctx) -> CaseOutcome {
    let name = c.name("missing");
    if c.caps.lifecycle.auto_create {
        let producer = c.producer(&name).await?;
        producer
            .send(Event::new("created"))
            .await
            .check("send to a new stream")?;
        let listed = c.backend.list_streams().await.check("list")?;
        ensure!(
            listed.contains(&name),
            "auto-created stream {name} is not listed"
        );
        return Ok(Some("auto-created".into()));
    }
    let produced = async { c.backend.producer(&name).await?.send(Event::new("x")).await };
    let err = produced.await.must_fail(ErrorKind::NotFound, "send")?;
    ensure!(
        err.to_string().contains(&name),
        "error does not name the stream: {err}"
    );
    let consumed = async {
        c.backend
            .consumer(&name, ConsumerOptions::new("g"))
            .await?
            .receive()
            .await
    };
    consumed.await.must_fail(ErrorKind::NotFound, "consume")?;
    Ok(None)
}

/// An unknown option, a malformed URL, an empty group name and an invalid stream name each fail with a configuration error.
pub(crate) async fn bad_configuration(c: &mut Ctx) -> CaseOutcome {
    let sep = if c.harness.url.contains('?') {
        '&'
    } else {
        '?'
    };
    let unknown = format!("{}{sep}tributary_no_such_option=1", c.harness.url);
    let err = tributary::connect(&unknown)
        .await
        .must_fail(ErrorKind::Config, "unknown option")?;
    ensure!(
        err.to_string().contains("tributary_no_such_option"),
        "error does not name the option: {err}"
    );
    let scheme = c.harness.url.split("://").next().unwrap_or("memory");
    tributary::connect(&format!("{scheme}://[malformed"))
        .await
        .must_fail(ErrorKind::Config, "malformed URL")?;
    c.backend
        .consumer("whatever", ConsumerOptions::new(""))
        .await
        .must_fail(ErrorKind::Config, "empty group")?;
    if !c.caps.admin {
        return Ok(Some(
            "stream names not checked: the backend cannot create streams".into(),
        ));
    }
    c.backend
        .create_stream("bad name/with slash", StreamSpec::default())
        .await
        .must_fail(ErrorKind::Config, "bad stream name")?;
    Ok(None)
}

/// Sends and receives dropped mid-flight leave the producer and consumer usable and lose no event.
pub(crate) async fn cancellation(c: &mut Ctx) -> CaseOutcome {
    let (consumer, producer) = c.stream_with_reader("cancel", 1).await?;
    // A receive dropped while waiting.
    ensure!(
        consumer
            .receive_timeout(Duration::from_millis(50))
            .await
            .check("receive")?
            .is_none(),
        "empty stream delivered"
    );
    // A send dropped before completion: the producer stays usable.
    // Polled at least once, then dropped mid-flight; the event may or may not be stored.
    let _ =
        tokio::time::timeout(Duration::from_micros(1), producer.send(Event::new("maybe"))).await;
    let sent = numbered("cx", 20);
    producer
        .send_batch(sent.clone())
        .await
        .check("send after a dropped send")?;
    // Receives cancelled at random points lose nothing.
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    let wanted = |got: &[Delivery]| {
        got.iter()
            .filter(|d| d.event.payload.as_ref() != b"maybe")
            .count()
    };
    while wanted(&got) < 20 && Instant::now() < deadline {
        if let Ok(r) = tokio::time::timeout(Duration::from_micros(50), consumer.receive()).await {
            got.push(r.check("receive")?);
        }
    }
    let mut got_payloads = payloads(&got);
    got_payloads.retain(|p| p.as_ref() != b"maybe");
    same_set(&got_payloads, &sent)?;
    ack_all(got);
    Ok(None)
}

//! What a member delivers and in what order: redeliveries first, and a group's pinned start.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_event_comes_back_before_later_ones_in_first_delivery_order() {
    let stream = SimStream::new(1);
    for i in 0..20 {
        stream.append("k", format!("e{i}"));
    }
    let (engine, _) = memory_engine(Duration::from_secs(5)).await;
    let consumer = join_group(&engine, &stream, StartPosition::Earliest).await;
    let e0 = consumer.receive().await.unwrap();
    let e1 = consumer.receive().await.unwrap();
    let e2 = consumer.receive().await.unwrap();
    e0.nack();
    e1.nack();
    e2.ack();
    let next: Vec<(String, u32)> = consumer
        .receive_batch(3, Duration::from_millis(50))
        .await
        .unwrap()
        .into_iter()
        .map(|d| {
            let attempt = d.attempt.unwrap();
            let payload = String::from_utf8(d.event.payload.to_vec()).unwrap();
            d.ack();
            (payload, attempt)
        })
        .collect();
    assert_eq!(
        next,
        vec![
            ("e0".to_owned(), 2),
            ("e1".to_owned(), 2),
            ("e3".to_owned(), 1)
        ]
    );
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_is_pinned_so_a_later_owner_does_not_skip() {
    let stream = SimStream::new(2);
    stream.append("a", "old".to_owned());
    let (engine, _) = memory_engine(Duration::from_secs(5)).await;
    let consumer = join_group(&engine, &stream, StartPosition::Latest).await;
    consumer.close().await.unwrap();
    // Sent while nobody consumes: a consumer joining later must see it, though it starts
    // `Latest`, because the group's start was pinned when it first joined.
    stream.append("a", "new".to_owned());
    let again = join_group(&engine, &stream, StartPosition::Latest).await;
    let d = again.receive().await.unwrap();
    assert_eq!(d.event.payload.as_ref(), b"new");
    d.ack();
    again.close().await.unwrap();
}

//! How members share a group's partitions: fair shares, a closing member handing over at
//! once, and a member joining a group whose holders are at their ceiling share.

use super::*;
use crate::ErrorKind;

/// Waits until the leases are held in `counts` (per owner, fewest first).
async fn wait_for_shares(store: &Arc<dyn CheckpointStore>, counts: &[usize], what: &str) {
    let within = Duration::from_secs(10);
    wait_for(within, what, || lease_counts(store), |c| c == counts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_share_the_partitions_and_a_closing_one_hands_over_at_once() {
    let stream = SimStream::new(4);
    let (store, _, engines) = engines(2, |c| c.shed_grace(Duration::from_millis(50)));
    let ca = join_group(&engines[0], &stream, StartPosition::Earliest).await;
    let cb = join_group(&engines[1], &stream, StartPosition::Earliest).await;
    wait_for_shares(&store, &[2, 2], "balanced").await;
    ca.close().await.unwrap();
    assert_eq!(
        store.leases("g", "s").await.unwrap().len(),
        2,
        "a closed member releases at once"
    );
    wait_for_shares(&store, &[4], "the other member took all").await;
    cb.close().await.unwrap();
    assert!(store.leases("g", "s").await.unwrap().is_empty());
    assert_eq!(
        cb.receive().await.unwrap_err().kind(),
        ErrorKind::Closed,
        "receive after close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joining_a_group_at_its_ceiling_share_takes_a_partition() {
    // 4 partitions held 2 + 2: each holder is at the ceiling of 4 / 3, so neither sheds; the
    // third member must take one, or it idles while the others carry the stream.
    let stream = SimStream::new(4);
    let (store, _, engines) = engines(3, |c| c.shed_grace(Duration::from_millis(50)));
    let mut consumers = Vec::new();
    for engine in &engines[..2] {
        consumers.push(join_group(engine, &stream, StartPosition::Earliest).await);
    }
    wait_for_shares(&store, &[2, 2], "balanced").await;
    consumers.push(join_group(&engines[2], &stream, StartPosition::Earliest).await);
    wait_for_shares(&store, &[1, 1, 2], "the third member got a partition").await;
    for consumer in consumers {
        consumer.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_holding_nothing_takes_a_partition_in_its_first_round() {
    // A member that holds no lease is invisible to the others: they count owners from the
    // leases, so none of them sheds for it, and waiting rounds for the holder to shed on its
    // own only leaves the newcomer idle. Here a lone member took all 4 partitions; when a
    // second member's join returns (after its first balance round), it must already hold one.
    // The same happens after a crash, when the survivor that balances first takes every freed
    // partition while another survivor holds none.
    let stream = SimStream::new(4);
    let (store, _, engines) = engines(2, |c| {
        c.shed_grace(Duration::from_millis(50))
            // Rounds far apart: only the join's own round can have moved a partition.
            .balance_interval(Duration::from_secs(30))
    });
    let first = join_group(&engines[0], &stream, StartPosition::Earliest).await;
    assert_eq!(lease_counts(&store).await, [4], "a lone member takes all");
    let second = join_group(&engines[1], &stream, StartPosition::Earliest).await;
    // [1, 3], or already [2, 2]: the first member, told it lost a partition, balances at once
    // and may shed to the second.
    let counts = lease_counts(&store).await;
    assert!(
        counts.len() == 2 && counts.iter().sum::<usize>() == 4,
        "the second member's first round took a partition: {counts:?}"
    );
    first.close().await.unwrap();
    second.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_member_steals_once_and_lets_the_holder_shed_the_rest() {
    // A member joining a group whose only holder has all 4 partitions takes one at once (it is
    // invisible while it holds none). Then the holder, seeing it, sheds one more: a graceful
    // hand-over, its in-flight events acked and committed first. The joining member must not
    // steal that second partition in a round run right after its join (joining wakes a round),
    // before the holder had a balance round of its own: every steal redelivers what the
    // holder had in flight.
    let stream = SimStream::new(4);
    let (store, events, engines) = engines(2, |c| {
        c.shed_grace(Duration::from_millis(50))
            .balance_interval(Duration::from_millis(300))
    });
    let first = join_group(&engines[0], &stream, StartPosition::Earliest).await;
    assert_eq!(lease_counts(&store).await, [4]);
    let second = join_group(&engines[1], &stream, StartPosition::Earliest).await;
    wait_for_shares(&store, &[2, 2], "balanced").await;
    // Two more rounds each: no steal is still coming.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (lost, released) = {
        let events = events.lock();
        let count = |lost: bool| {
            events
                .iter()
                .filter(|e| match e {
                    GroupEvent::Lost { .. } => lost,
                    GroupEvent::Released { .. } => !lost,
                    _ => false,
                })
                .count()
        };
        (count(true), count(false))
    };
    assert_eq!(
        (lost, released),
        (1, 1),
        "partitions the holder lost to steals, and shed (released)"
    );
    first.close().await.unwrap();
    second.close().await.unwrap();
}

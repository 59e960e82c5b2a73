//! tributary's Kinesis producer and consumer beside raw `aws-sdk-kinesis` calls doing the same
//! work, against the same ferrokinesis in the same run (started by the fixture).
//!
//! `cargo bench -p tributary-kinesis --bench kinesis [-- EVENTS]` prints a table; nothing is
//! asserted. `BENCH_KINESIS_EVENTS` sets the count instead of the argument (default 100,000),
//! `BENCH_KINESIS_ROUNDS` the measured rounds (default 12); with `BENCH_JSON=PATH` the table's
//! figures are also written there as JSON, for `scripts/bench`'s report.
//!
//! Same work means: the same events (100-byte payload, a key out of 10,000; both sides send
//! the same bytes, as tributary sends an event with no headers or timestamp as a plain
//! record), a four-shard stream, `PutRecords` calls of 500 records with four in flight;
//! readers of each shard making at most one `GetRecords` call (up to 10,000 records) per
//! 200 ms, the service's per-shard limit, each side timed from before it lists the shards. The
//! raw consumer copies each record's data out; tributary's consumer delivers, acks and
//! checkpoints (in memory) as an application would.
//!
//! Same server state: ferrokinesis answers `PutRecords` more slowly the more records it holds
//! (9 ms a call of 500 on a fresh emulator, 20–25 ms once it holds 200,000), so each side
//! produces and consumes on a stream of its own that is deleted before the other side starts,
//! each side goes first in half of the rounds, and an unmeasured warm-up round goes before
//! them (the emulator's very first phase is the fastest of all).
//!
//! Beside each rate: the client CPU per event (this process's user and system time; the
//! emulator runs in its own), steadier than rates on a shared machine, allocations per event,
//! and the `PutRecords` calls each side made (per 1,000 events, their mean time out and how
//! many were out at once on average), counted the same way on both sides from the SDK's own
//! per-operation tracing span.
//!
//! `BENCH_KINESIS_MODES` picks the modes (`throughput,latency`). `latency`: one event at a time
//! sent (its `PutRecords` answer awaited), received and acked, raw, tributary, and tributary
//! with `fanout=true`, each on a stream of its own, [`LATENCY_SAMPLES`] per side in each of
//! `BENCH_KINESIS_LATENCY_ROUNDS` (default 2: a round takes two minutes) rounds turning the
//! order; p50/p90/p99/p99.9 pooled. The raw side reads each shard as its throughput phase does
//! (a `GetRecords` call per 200 ms); tributary with its defaults. Each sample waits a pause of
//! up to 250 ms first ([`probe::latency_gap`]), so that sends do not keep the phase of the
//! polls.

#[path = "../../../benches/probe.rs"]
mod probe;

#[path = "kinesis/calls.rs"]
mod calls;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use futures::StreamExt;
use tributary::{Backend, ConsumerOptions, Event, StartPosition, StreamSpec};
use tributary_testcontainers::{Peer, require, unique_name};

// glibc's `malloc` is where a profile of this benchmark spends most of its client time.
#[global_allocator]
static GLOBAL: probe::CountingAllocator = probe::CountingAllocator;

const BATCH: usize = 500;
const IN_FLIGHT: usize = 4;
const PAYLOAD: usize = 100;
const SHARDS: u32 = 4;
const CALL_GAP: Duration = Duration::from_millis(200);
/// Measured rounds (each side first in half of them), after one unmeasured warm-up round;
/// `BENCH_KINESIS_ROUNDS` sets another count. Twelve, so that the 95% interval of the median
/// ratio per round (`benches/stats.rs`) leaves out the two lowest and the two highest rounds.
const ROUNDS: usize = 12;

fn key(i: usize) -> String {
    format!("key-{:05}", i % 10_000)
}

fn raw_client(endpoint: &str) -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new("test", "test", None, None, "static"))
            .build(),
    )
}

async fn raw_produce(client: &aws_sdk_kinesis::Client, stream: &str, n: usize) -> f64 {
    let events = events(n);
    let started = Instant::now();
    futures::stream::iter(events.chunks(BATCH))
        .map(|chunk| async move {
            // What a raw client does with its events: one request entry each.
            let mut pending: Vec<PutRecordsRequestEntry> = chunk
                .iter()
                .map(|e| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(String::from_utf8_lossy(e.key.as_deref().unwrap()))
                        .data(Blob::new(e.payload.to_vec()))
                        .build()
                        .unwrap()
                })
                .collect();
            // Partial failures are retried, as any correct raw producer must.
            while !pending.is_empty() {
                let out = client
                    .put_records()
                    .stream_name(stream)
                    .set_records(Some(pending.clone()))
                    .send()
                    .await
                    .unwrap();
                pending = pending
                    .into_iter()
                    .zip(out.records())
                    .filter(|(_, r)| r.error_code().is_some())
                    .map(|(e, _)| e)
                    .collect();
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    n as f64 / started.elapsed().as_secs_f64()
}

fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| Event::new(vec![b'x'; PAYLOAD]).with_key(key(i)))
        .collect()
}

/// The events in batches of [`BATCH`], each event built once: `send_batch` takes its events,
/// so an application hands over what it built, as the raw side builds its entries from events
/// made before its clock starts; cloning each batch inside the timed loop would charge
/// tributary for a copy (and, for fresh `Bytes`, an allocation per key and payload) that no
/// application needs to make.
fn batches(n: usize) -> Vec<Vec<Event>> {
    let mut events = events(n).into_iter();
    std::iter::from_fn(|| Some(events.by_ref().take(BATCH).collect::<Vec<_>>()))
        .take_while(|batch| !batch.is_empty())
        .collect()
}

async fn tributary_produce(backend: &dyn Backend, stream: &str, n: usize) -> f64 {
    let producer = backend.producer(stream).await.unwrap();
    let batches = batches(n);
    let started = Instant::now();
    futures::stream::iter(batches)
        .map(|batch| producer.send_batch(batch))
        .buffer_unordered(IN_FLIGHT)
        .for_each(|r| async move {
            r.unwrap();
        })
        .await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    producer.close().await.unwrap();
    rate
}

async fn raw_consume(client: &aws_sdk_kinesis::Client, stream: &str, n: usize) -> f64 {
    // Timed from the start, as tributary's consumer is from its creation (which lists shards).
    let started = Instant::now();
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    let total = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let readers = shards.shards().iter().map(|shard| {
        let (client, total) = (client.clone(), total.clone());
        let (stream, shard) = (stream.to_owned(), shard.shard_id().to_owned());
        tokio::spawn(async move {
            let mut it = client
                .get_shard_iterator()
                .stream_name(&stream)
                .shard_id(&shard)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .unwrap()
                .shard_iterator
                .unwrap();
            let mut bytes = 0usize;
            while total.load(std::sync::atomic::Ordering::Relaxed) < n {
                let next_call = tokio::time::Instant::now() + CALL_GAP;
                let out = client
                    .get_records()
                    .shard_iterator(&it)
                    .limit(10_000)
                    .send()
                    .await
                    .unwrap();
                for record in out.records() {
                    bytes += record.data().as_ref().to_vec().len();
                }
                total.fetch_add(out.records().len(), std::sync::atomic::Ordering::Relaxed);
                it = out.next_shard_iterator().unwrap().to_owned();
                tokio::time::sleep_until(next_call).await;
            }
            bytes
        })
    });
    futures::future::join_all(readers).await;
    n as f64 / started.elapsed().as_secs_f64()
}

async fn tributary_consume(backend: &dyn Backend, stream: &str, n: usize) -> f64 {
    let started = Instant::now();
    let consumer = backend
        .consumer(
            stream,
            ConsumerOptions::new(unique_name("bench")).start(StartPosition::Earliest),
        )
        .await
        .unwrap();
    let mut got = 0;
    while got < n {
        let batch = consumer
            .receive_batch(1000, Duration::from_millis(5))
            .await
            .unwrap();
        got += batch.len();
        for d in batch {
            d.ack();
        }
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    consumer.close().await.unwrap();
    rate
}

/// Samples per side per round in the `latency` mode: fewer than the other benches'
/// [`probe::LATENCY_SAMPLES`], because every sample waits for a shard's next poll (up to
/// 200–250 ms) after a pause of up to as long: 2000 would add half an hour to the bench.
const LATENCY_SAMPLES: usize = 200;
/// The longest pause before a sample ([`probe::latency_gap`]): tributary's poll interval.
const LATENCY_GAP: Duration = Duration::from_millis(250);

/// The raw side of a `latency` round: a reader per shard calling `GetRecords` once per
/// [`CALL_GAP`] as the throughput phase does, and one event at a time sent in a `PutRecords`
/// call of one entry; µs from the send to the record reaching the loop. The first event goes
/// through untimed (the readers' first iterators).
async fn raw_latency(client: &aws_sdk_kinesis::Client, stream: &str, samples: usize) -> Vec<f64> {
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    let (records, mut arrived) = tokio::sync::mpsc::channel::<usize>(1024);
    let readers: Vec<_> = shards
        .shards()
        .iter()
        .map(|shard| {
            let (client, records) = (client.clone(), records.clone());
            let (stream, shard) = (stream.to_owned(), shard.shard_id().to_owned());
            tokio::spawn(async move {
                let mut it = client
                    .get_shard_iterator()
                    .stream_name(&stream)
                    .shard_id(&shard)
                    .shard_iterator_type(ShardIteratorType::TrimHorizon)
                    .send()
                    .await
                    .unwrap()
                    .shard_iterator
                    .unwrap();
                loop {
                    let next_call = tokio::time::Instant::now() + CALL_GAP;
                    let out = client
                        .get_records()
                        .shard_iterator(&it)
                        .limit(10_000)
                        .send()
                        .await
                        .unwrap();
                    for record in out.records() {
                        if records
                            .send(record.data().as_ref().to_vec().len())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    it = out.next_shard_iterator().unwrap().to_owned();
                    tokio::time::sleep_until(next_call).await;
                }
            })
        })
        .collect();
    let mut micros = Vec::with_capacity(samples);
    for (i, event) in events(samples + 1).into_iter().enumerate() {
        let entry = PutRecordsRequestEntry::builder()
            .partition_key(String::from_utf8_lossy(event.key.as_deref().unwrap()))
            .data(Blob::new(event.payload.to_vec()))
            .build()
            .unwrap();
        tokio::time::sleep(probe::latency_gap(i, LATENCY_GAP)).await;
        let started = Instant::now();
        loop {
            let out = client
                .put_records()
                .stream_name(stream)
                .records(entry.clone())
                .send()
                .await
                .unwrap();
            if out.records().iter().all(|r| r.error_code().is_none()) {
                break;
            }
        }
        assert_eq!(arrived.recv().await, Some(PAYLOAD));
        if i > 0 {
            micros.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    for reader in readers {
        reader.abort();
    }
    micros
}

/// The `latency` mode: raw, tributary, and tributary with `fanout=true` (enhanced fan-out:
/// `SubscribeToShard` pushes records, no poll), each on a stream of its own (deleted after the
/// side, as in the throughput rounds), the order turning each round. No Python column: the
/// official consumer is the KCL (Java), not installed here; boto3 would repeat the raw loop.
async fn latency_rows(
    raw: &aws_sdk_kinesis::Client,
    backend: &dyn Backend,
    url: &str,
    rounds: usize,
) {
    let fanout = tributary::connect(&format!("{url}&fanout=true"))
        .await
        .unwrap();
    let mut all = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..rounds {
        let mut got = [Vec::new(), Vec::new(), Vec::new()];
        for turn in 0..3 {
            let side = (round + turn) % 3;
            let stream = unique_name(["lat-raw", "lat-trib", "lat-fanout"][side]);
            backend
                .create_stream(&stream, StreamSpec::with_partitions(SHARDS))
                .await
                .unwrap();
            got[side] = if side == 0 {
                raw_latency(raw, &stream, LATENCY_SAMPLES).await
            } else {
                let mut events = events(LATENCY_SAMPLES + 1);
                let first = events.remove(0);
                let options =
                    ConsumerOptions::new(unique_name("bench-lat")).start(StartPosition::Earliest);
                let backend = if side == 1 { backend } else { fanout.as_ref() };
                probe::tributary_latency(backend, &stream, options, first, events, LATENCY_GAP)
                    .await
            };
            backend.delete_stream(&stream).await.unwrap();
        }
        println!(
            "latency round {round}: p50/p99 raw {}, tributary {}, tributary fanout=true {}; load {}",
            probe::p50_p99(&got[0]),
            probe::p50_p99(&got[1]),
            probe::p50_p99(&got[2]),
            probe::load_average()
        );
        for (all, got) in all.iter_mut().zip(got) {
            all.extend(got);
        }
    }
    fanout.close().await.unwrap();
    probe::latency_table(
        &format!(
            "Kinesis latency: one event sent (PutRecords answered), received and acked, {LATENCY_SAMPLES} per side per round, {rounds} rounds pooled (µs)"
        ),
        &[
            ("raw aws-sdk-kinesis (GetRecords per 200 ms)", &all[0]),
            ("tributary", &all[1]),
            ("tributary, fanout=true", &all[2]),
        ],
    );
}

/// What one side did: its rate, per event the client CPU (µs) and allocations (all, and of
/// 1 KiB or more), and its `PutRecords` calls: per 1,000 events, their mean time out (ms)
/// and how many were out on average (their summed time over the phase's).
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    rate: f64,
    cpu: f64,
    allocations: f64,
    large: f64,
    calls: f64,
    call_ms: f64,
    calls_out: f64,
}

/// Runs one side. With `BENCH_KINESIS_MARKS` set, its phase is marked for `perf report --time`.
async fn measured(n: usize, phase: &str, work: impl std::future::Future<Output = f64>) -> Figures {
    probe::mark("BENCH_KINESIS_MARKS", phase, "start");
    let before = probe::cpu_time();
    let (allocations, large) = probe::allocations();
    let calls_before = calls::now();
    let rate = work.await;
    let calls = calls::now() - calls_before;
    // The side's own timed window (tributary's leaves out making and closing its producer).
    let timed = n as f64 / rate;
    probe::mark("BENCH_KINESIS_MARKS", phase, "end");
    let per_event = |count: u64| count as f64 / n as f64;
    Figures {
        rate,
        cpu: (probe::cpu_time() - before).as_secs_f64() * 1e6 / n as f64,
        allocations: per_event(probe::allocations().0 - allocations),
        large: per_event(probe::allocations().1 - large),
        calls: per_event(calls.count) * 1000.0,
        call_ms: calls.busy_nanos as f64 / 1e6 / calls.count.max(1) as f64,
        calls_out: calls.busy_nanos as f64 / 1e9 / timed,
    }
}

fn main() {
    let n: usize = std::env::var("BENCH_KINESIS_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .or_else(|| std::env::args().skip(1).find_map(|a| a.parse().ok()))
        .unwrap_or(100_000);
    let rounds: usize = std::env::var("BENCH_KINESIS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS)
        .max(1);
    let latency_rounds: usize = std::env::var("BENCH_KINESIS_LATENCY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .max(1);
    let modes =
        std::env::var("BENCH_KINESIS_MODES").unwrap_or_else(|_| "throughput,latency".to_owned());
    let Some(server) = require(Peer::Kinesis) else {
        return;
    };
    calls::install();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tributary_kinesis::register();
            let url = format!("{}&checkpoints=memory", server.url());
            let backend = tributary::connect(&url).await.unwrap();
            let endpoint = url
                .split('?')
                .nth(1)
                .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("endpoint=")))
                .unwrap()
                .to_owned();
            let raw = raw_client(&endpoint);
            if modes.split(',').any(|m| m == "throughput") {
            // Each side meets the emulator first in one round of two: ferrokinesis slows as
            // it holds more records, so a fixed order favours whoever goes first.
            // [produce, consume] × [raw, tributary]: seconds per event summed (so that the
            // totals are rates over all rounds), the rest averaged.
            let mut seconds = [[0.0f64; 2]; 2];
            let mut mean = [[Figures::default(); 2]; 2];
            let mut ratios = [Vec::new(), Vec::new()];
            for round in 0..=rounds {
                // Round 0 warms up: the emulator is fastest while it has never held records,
                // so whoever produced first on a fresh one would be favoured.
                let warm_up = round == 0;
                let raw_first = round % 2 == 1;
                let order = if raw_first { [0, 1] } else { [1, 0] };
                let mut figures = [[Figures::default(); 2]; 2];
                for side in order {
                    // Each side meets an emulator holding nothing: its stream is made for the
                    // side and deleted after it (see the module's documentation).
                    let stream = unique_name(["bench-raw", "bench-tributary"][side]);
                    backend
                        .create_stream(&stream, StreamSpec::with_partitions(SHARDS))
                        .await
                        .unwrap();
                    figures[side] = if side == 0 {
                        [
                            measured(n, "raw-produce", raw_produce(&raw, &stream, n)).await,
                            measured(n, "raw-consume", raw_consume(&raw, &stream, n)).await,
                        ]
                    } else {
                        let work = tributary_produce(backend.as_ref(), &stream, n);
                        let produced = measured(n, "tributary-produce", work).await;
                        let work = tributary_consume(backend.as_ref(), &stream, n);
                        [produced, measured(n, "tributary-consume", work).await]
                    };
                    backend.delete_stream(&stream).await.unwrap();
                }
                // [produce, consume] × [raw, tributary], as the rest of the loop reads them.
                let figures = [
                    [figures[0][0], figures[1][0]],
                    [figures[0][1], figures[1][1]],
                ];
                let line = |f: Figures| {
                    let calls = if f.calls > 0.0 {
                        format!(
                            "; {:.2} PutRecords per 1,000 events, {:.1} ms each, {:.2} out",
                            f.calls, f.call_ms, f.calls_out
                        )
                    } else {
                        String::new()
                    };
                    format!(
                        "{:.0}/s ({:.1} µs CPU, {:.1} allocations, {:.3} of 1 KiB+ per event{calls})",
                        f.rate, f.cpu, f.allocations, f.large
                    )
                };
                println!(
                    "{} ({} first): produce raw {}, tributary {}; consume raw {}, tributary {}",
                    if warm_up { "warm-up".to_owned() } else { format!("round {round}") },
                    if raw_first { "raw" } else { "tributary" },
                    line(figures[0][0]),
                    line(figures[0][1]),
                    line(figures[1][0]),
                    line(figures[1][1]),
                );
                if warm_up {
                    continue;
                }
                for what in 0..2 {
                    ratios[what].push(figures[what][1].rate / figures[what][0].rate);
                    for side in 0..2 {
                        let (f, m) = (figures[what][side], &mut mean[what][side]);
                        seconds[what][side] += 1.0 / f.rate;
                        m.cpu += f.cpu / rounds as f64;
                        m.allocations += f.allocations / rounds as f64;
                        m.large += f.large / rounds as f64;
                        m.calls += f.calls / rounds as f64;
                    }
                }
            }
            println!(
                "\nKinesis (ferrokinesis), {n} events of {PAYLOAD} B, {SHARDS} shards, {rounds} rounds and a warm-up"
            );
            println!(
                "{:<10} {:>14} {:>14} {:>8} {:>22} {:>22}",
                "",
                "raw events/s",
                "tributary",
                "ratio",
                "CPU µs/event raw, ours",
                "allocs/event raw, ours"
            );
            let mut rows = Vec::new();
            for (what, name) in ["produce", "consume"].into_iter().enumerate() {
                let [raw, ours] = seconds[what].map(|s| rounds as f64 / s);
                let [raw_f, our_f] = mean[what];
                rows.push(serde_json::json!({
                    "case": name,
                    "raw_per_sec": raw,
                    "per_sec": ours,
                    "raw_cpu_us": raw_f.cpu,
                    "cpu_us": our_f.cpu,
                    "raw_allocations": raw_f.allocations,
                    "allocations": our_f.allocations,
                    "raw_calls_per_1000": raw_f.calls,
                    "calls_per_1000": our_f.calls,
                    "round_ratios": ratios[what],
                }));
                println!(
                    "{name:<10} {raw:>14.0} {ours:>14.0} {:>7.2}x {:>14.1} {:>7.1} {:>14.1} {:>7.1}",
                    ours / raw,
                    raw_f.cpu,
                    our_f.cpu,
                    raw_f.allocations,
                    our_f.allocations
                );
            }
            for (what, name) in ["produce", "consume"].into_iter().enumerate() {
                let rounds: Vec<String> = ratios[what].iter().map(|x| format!("{x:.2}")).collect();
                println!(
                    "{name} ratio by round: {} (median {})",
                    rounds.join(", "),
                    probe::ratio_with_interval(&ratios[what])
                );
            }
            if let Ok(path) = std::env::var("BENCH_JSON") {
                let json = serde_json::json!({
                    "events": n,
                    "payload": PAYLOAD,
                    "shards": SHARDS,
                    "rounds": rounds,
                    "rows": rows,
                });
                std::fs::write(&path, json.to_string())
                    .unwrap_or_else(|e| panic!("writing {path}: {e}"));
            }
            }
            if modes.split(',').any(|m| m == "latency") {
                latency_rows(&raw, backend.as_ref(), &url, latency_rounds).await;
            }
            backend.close().await.unwrap();
        });
}

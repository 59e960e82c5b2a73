//! What every benchmark measures about its own process beside rates: CPU time, resident memory,
//! and phase marks for profiling one phase alone. Included by path (`#[path] mod probe;`) by
//! each crate's benchmark, so the workspace keeps no crate for three functions.

// Each benchmark uses the part it needs.
#![allow(dead_code)]

use std::time::Duration;

#[path = "stats.rs"]
pub mod stats;
pub use stats::ratio_with_interval;

/// User and system CPU time this process has used so far, every thread included (a client
/// library's own threads too; servers are other processes). On a shared machine CPU per
/// event says more than events per second.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the rusage it is given and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// This process's resident set (VmRSS), in bytes; 0 where /proc is not there.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// When the environment variable `switch` is set, prints when a phase starts or ends on
/// CLOCK_MONOTONIC (`mark <phase> <edge> <seconds>`), for `perf record -k mono` then
/// `perf report --time START,END`: a profile of one phase alone.
pub fn mark(switch: &str, phase: &str, edge: &str) {
    if std::env::var_os(switch).is_none() {
        return;
    }
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    println!("mark {phase} {edge} {}.{:09}", now.tv_sec, now.tv_nsec);
}

/// The system allocator, counting: allocations per event are a figure that does not vary with
/// the machine's load. Requests of 1 KiB and more are counted apart: each one makes glibc
/// consolidate its fast bins (`malloc_consolidate`) when small chunks are waiting there. A
/// benchmark installs it with `#[global_allocator] static GLOBAL: probe::CountingAllocator =
/// probe::CountingAllocator;` and reads [`allocations`] before and after a phase.
///
/// Each thread counts in a shard of its own (a cache line), summed when read, with a plain
/// load and store: one counter shared by every thread cost a locked increment per allocation,
/// contended by every thread that allocates at once, which taxed a side that allocates on
/// several threads (a client decoding on its runtime's workers) more than one that allocates
/// on one, and so skewed the very comparison it measures.
pub struct CountingAllocator;

/// One thread's counts. Only its thread writes them (the last shard excepted, see
/// [`count_allocation`]), so an increment needs no locked instruction.
#[repr(align(128))]
struct Shard {
    allocations: std::sync::atomic::AtomicU64,
    large: std::sync::atomic::AtomicU64,
}

const SHARDS: usize = 256;
static COUNTS: [Shard; SHARDS] = [const {
    Shard {
        allocations: std::sync::atomic::AtomicU64::new(0),
        large: std::sync::atomic::AtomicU64::new(0),
    }
}; SHARDS];
/// The next shard handed to a thread that allocates for the first time.
static NEXT_SHARD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
const LARGE: usize = 1024;

thread_local! {
    // Const-initialised and without a destructor: reading it never allocates, so the
    // allocator may use it.
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

fn count_allocation(size: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    let shard = SHARD.with(|shard| {
        if shard.get() == usize::MAX {
            shard.set(NEXT_SHARD.fetch_add(1, Relaxed).min(SHARDS - 1));
        }
        shard.get()
    });
    let counts = &COUNTS[shard];
    let add = |counter: &std::sync::atomic::AtomicU64| {
        if shard == SHARDS - 1 {
            // Shared by every thread past the others (a long run's short-lived blocking
            // threads): a locked increment, so no count is lost.
            counter.fetch_add(1, Relaxed);
        } else {
            counter.store(counter.load(Relaxed) + 1, Relaxed);
        }
    };
    add(&counts.allocations);
    if size >= LARGE {
        add(&counts.large);
    }
}

// SAFETY: every call is passed on to the system allocator unchanged; only counters are added.
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_allocation(layout.size());
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_allocation(layout.size());
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        count_allocation(new_size);
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

/// Allocations (and reallocations) made so far by the whole process, and how many of them
/// asked for 1 KiB or more. Counted only where [`CountingAllocator`] is the global allocator.
pub fn allocations() -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    COUNTS.iter().fold((0, 0), |(all, large), counts| {
        (
            all + counts.allocations.load(Relaxed),
            large + counts.large.load(Relaxed),
        )
    })
}

/// Prints one goal row of the project's performance goals as `goal: ROW | MEASURED | GOAL |
/// yes/no`. `scripts/bench` gathers these lines from every suite's output into the table at
/// the top of BENCHMARKS.md, so each benchmark states its own verdict from its own figures.
pub fn goal(row: &str, measured: impl std::fmt::Display, goal: &str, met: bool) {
    println!(
        "goal: {row} | {measured} | {goal} | {}",
        if met { "yes" } else { "no" }
    );
}

/// Prints a ratio goal measured once per round: the median of `ratios` with its 95% interval
/// (`stats.rs`), met when the median reaches `goal`.
pub fn ratio_goal(row: &str, ratios: &[f64], goal: f64) {
    self::goal(
        row,
        ratio_with_interval(ratios),
        &format!("≥ {goal}×"),
        stats::median(ratios) >= goal,
    );
}

/// Median, minimum and maximum of `values` (the mean of the two middle ones for an even
/// count): rounds on a shared machine are reported with their spread, never alone.
pub fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (stats::median(&values), values[0], values[values.len() - 1])
}

/// tributary's side of a produce phase: the events `make_events` builds, through a new
/// producer of `stream` in `send_batch` calls of `batch`, each awaited before the next. Events
/// per second from the first send; making and closing the producer are not counted.
///
/// The events are built after the producer is made, as the raw clients' phases do: a client
/// finishes starting up in the background meanwhile (Kafka's idempotent producer fetches its
/// producer id), and building them first put that start-up inside tributary's timed window
/// alone (Kafka produce read 0.78× raw instead of 1.05× for the same library).
pub async fn tributary_produce(
    backend: &dyn tributary::Backend,
    stream: &str,
    make_events: impl FnOnce() -> Vec<tributary::Event>,
    batch: usize,
) -> f64 {
    let producer = backend.producer(stream).await.unwrap();
    let events = make_events();
    let n = events.len();
    let started = std::time::Instant::now();
    for chunk in events.chunks(batch) {
        producer.send_batch(chunk.to_vec()).await.unwrap();
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    producer.close().await.unwrap();
    rate
}

/// tributary's side of a consume phase: a consumer of `stream` with `options` reads `n`
/// events, one `receive()` each, or `receive_batch(batch)` when `batch` is given, acking every
/// delivery. Events per second from its first delivery (joining and opening are not
/// throughput, as for the raw clients).
pub async fn tributary_consume(
    backend: &dyn tributary::Backend,
    stream: &str,
    options: tributary::ConsumerOptions,
    n: usize,
    batch: Option<usize>,
) -> f64 {
    let consumer = backend.consumer(stream, options).await.unwrap();
    consumer.receive().await.unwrap().ack();
    let started = std::time::Instant::now();
    let mut received = 1;
    while received < n {
        match batch {
            Some(batch) => {
                let deliveries = consumer
                    .receive_batch(batch.min(n - received), Duration::ZERO)
                    .await
                    .unwrap();
                received += deliveries.len();
                for delivery in deliveries {
                    delivery.ack();
                }
            }
            None => {
                consumer.receive().await.unwrap().ack();
                received += 1;
            }
        }
    }
    let rate = (n - 1) as f64 / started.elapsed().as_secs_f64();
    consumer.close().await.unwrap();
    rate
}

/// Samples per side per round in each bench's `latency` mode: enough for a p99.9 of 2 samples
/// pooled over a few rounds, few enough that the mode adds seconds, not minutes.
pub const LATENCY_SAMPLES: usize = 2000;

/// p50, p90, p99 and p99.9 of `micros`; 0 for none.
pub fn percentiles(mut micros: Vec<f64>) -> [f64; 4] {
    if micros.is_empty() {
        return [0.0; 4];
    }
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() as f64 * q) as usize).min(micros.len() - 1)];
    [at(0.5), at(0.9), at(0.99), at(0.999)]
}

/// `p50/p99 µs` of one round's samples, for the per-round line.
pub fn p50_p99(micros: &[f64]) -> String {
    let p = percentiles(micros.to_vec());
    format!("{:.0}/{:.0} µs", p[0], p[2])
}

/// The pause before sample `i` of a `latency` round on a backend whose readers poll: spread
/// over `0..max` (the poll period) by a fixed sequence, the same on every side. Without it,
/// each send follows the receive of the one before by microseconds, so it always lands just
/// after a poll and waits for the whole next one (a raw Kinesis loop polling every 200 ms read
/// 199 ms at the median): the loop would measure its own phase, not what an event arriving
/// at any moment waits. Zero for `max` zero (readers that are woken by the server).
pub fn latency_gap(i: usize, max: std::time::Duration) -> std::time::Duration {
    // Multiplicative hashing (Knuth): a fixed sequence spread evenly over 0..1000.
    let spread = (i as u64).wrapping_mul(2_654_435_761) % 1000;
    max.mul_f64(spread as f64 / 1000.0)
}

/// tributary's side of a `latency` round: one event at a time sent (its receipt awaited),
/// received and acked on a new consumer of `stream` with `options`; the time from the send to
/// the receive, in µs per sample, each sample after a [`latency_gap`] of up to `gap`. `first`
/// is sent and received before the timing starts, so that joining the group and the first
/// fetch are not in the figures (the raw sides do alike).
pub async fn tributary_latency(
    backend: &dyn tributary::Backend,
    stream: &str,
    options: tributary::ConsumerOptions,
    first: tributary::Event,
    events: Vec<tributary::Event>,
    gap: std::time::Duration,
) -> Vec<f64> {
    let consumer = backend.consumer(stream, options).await.unwrap();
    let producer = backend.producer(stream).await.unwrap();
    producer.send(first).await.unwrap();
    consumer.receive().await.unwrap().ack();
    let mut micros = Vec::with_capacity(events.len());
    for (i, event) in events.into_iter().enumerate() {
        if !gap.is_zero() {
            tokio::time::sleep(latency_gap(i + 1, gap)).await;
        }
        let started = std::time::Instant::now();
        producer.send(event).await.unwrap();
        let delivery = consumer.receive().await.unwrap();
        micros.push(started.elapsed().as_secs_f64() * 1e6);
        delivery.ack();
    }
    producer.close().await.unwrap();
    consumer.close().await.unwrap();
    micros
}

/// The send-to-receive times (µs) a latency peer script printed on its `latency ` line.
pub fn python_latencies(stdout: &str) -> Vec<f64> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("latency "))
        .unwrap_or_else(|| panic!("the Python peer printed no latencies: {stdout}"));
    line.split_whitespace()
        .map(|m| m.parse().unwrap())
        .collect()
}

/// Prints the `latency` mode's table: `title`, then one row of p50/p90/p99/p99.9 (µs) per
/// side whose samples (pooled over its rounds) are not empty.
pub fn latency_table(title: &str, sides: &[(&str, &[f64])]) {
    println!("\n{title}");
    println!("| | p50 | p90 | p99 | p99.9 |\n|---|---|---|---|---|");
    for (who, micros) in sides {
        if micros.is_empty() {
            continue;
        }
        let [p50, p90, p99, p999] = percentiles(micros.to_vec());
        println!("| {who} | {p50:.0} | {p90:.0} | {p99:.0} | {p999:.0} |");
    }
}

/// The load average over the last minute, from /proc/loadavg ("?" where it is not there).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

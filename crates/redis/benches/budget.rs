//! Budget reserve + settle latency, in-process vs through Redis (a throwaway `redis-server` on
//! loopback), one call at a time and 32 at once. Run with
//! `cargo bench -p aetherflow-redis --bench budget`; prints p50 / p99 per pair of operations.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aetherflow_domain::Money;
use aetherflow_redis::budget::RedisSpend;
use aetherflow_redis::testing::TestRedis;
use aetherflow_redis::{RedisSettings, Shared};
use aetherflow_resilience::budget::{Budgets, Scope};

const CALLS: usize = 20_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn measure(budgets: &Budgets, concurrency: usize) -> (Duration, Duration, f64) {
    let scopes = [Scope::Day("2026-11-30".into()), Scope::Run("bench".into())];
    budgets.set_cap(scopes[0].clone(), Some(Money::from_micros(u64::MAX / 4)));
    // Warm-up (scripts loaded, connection made).
    for _ in 0..200 {
        let r = budgets
            .acquire(&scopes, Money::from_micros(30))
            .await
            .expect("fits");
        r.settle(Money::from_micros(10)).await;
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let budgets = budgets.clone();
        let scopes = scopes.clone();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::with_capacity(CALLS / concurrency);
            for _ in 0..CALLS / concurrency {
                let t = Instant::now();
                let r = budgets
                    .acquire(&scopes, Money::from_micros(30))
                    .await
                    .expect("fits");
                r.settle(Money::from_micros(10)).await;
                times.push(t.elapsed());
            }
            times
        }));
    }
    let mut all = Vec::with_capacity(CALLS);
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let wall = started.elapsed();
    all.sort_unstable();
    (
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.len() as f64 / wall.as_secs_f64(),
    )
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let Some(redis) = TestRedis::start() else {
        eprintln!("{}", aetherflow_redis::testing::missing_reason());
        return;
    };
    runtime.block_on(async {
        let settings = RedisSettings {
            lease_secs: 60,
            ..redis.settings()
        };
        let shared = Shared::connect(&settings).expect("url");
        let through_redis = Budgets::shared(Arc::new(RedisSpend::new(shared)));
        let in_process = Budgets::new();
        println!("budget reserve + settle, {CALLS} calls");
        println!(
            "{:<14} {:>11} {:>10} {:>10} {:>12}",
            "store", "concurrency", "p50", "p99", "pairs/s"
        );
        for concurrency in [1, 32] {
            for (name, budgets) in [("in-process", &in_process), ("redis", &through_redis)] {
                let (p50, p99, rate) = measure(budgets, concurrency).await;
                println!(
                    "{name:<14} {concurrency:>11} {:>10.1?} {:>10.1?} {rate:>12.0}",
                    p50, p99
                );
            }
        }
    });
}

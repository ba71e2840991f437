//! Shared state against a real Redis (started from Debian's `redis-server` on a free loopback
//! port). Two `Shared` connections stand for two processes: they share nothing but Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aetherflow_domain::Money;
use aetherflow_provider::ProviderError;
use aetherflow_redis::breaker::RedisBreakers;
use aetherflow_redis::budget::RedisSpend;
use aetherflow_redis::ratelimit::{RedisRateLimiter, Verdict};
use aetherflow_redis::testing::TestRedis;
use aetherflow_redis::{RedisSettings, Shared};
use aetherflow_resilience::breaker::{BreakerPolicy, Breakers};
use aetherflow_resilience::budget::{BudgetError, Budgets, Scope};

fn replica(settings: &RedisSettings) -> Budgets {
    let shared = Shared::connect(settings).expect("connects lazily");
    Budgets::shared(Arc::new(RedisSpend::new(shared)))
}

fn day() -> Scope {
    Scope::Day("2026-11-30".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_never_pass_the_cap_and_admit_the_most_that_fits() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let settings = redis.settings();
    let cap = Money::from_micros(1_000);
    let replicas = [replica(&settings), replica(&settings)];
    for r in &replicas {
        r.set_cap(day(), Some(cap));
    }
    let admitted = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(200));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let budgets = replicas[i % 2].clone();
        let admitted = Arc::clone(&admitted);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            let got = budgets.acquire(&[day()], Money::from_micros(30)).await;
            // Every reservation is held until all 200 have asked, so admission is decided by
            // the cap alone, not by who committed first.
            barrier.wait().await;
            match got {
                Ok(r) => {
                    admitted.fetch_add(1, Ordering::SeqCst);
                    r.settle(Money::from_micros(30)).await;
                }
                Err(BudgetError::Exceeded(_)) => {}
                Err(e) => panic!("unexpected: {e}"),
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(admitted.load(Ordering::SeqCst), 33, "floor(1000 / 30)");
    let spend = replicas[1].current(&day()).await.expect("redis answers");
    assert_eq!(spend.committed, Money::from_micros(990));
    assert_eq!(spend.reserved, Money::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_names_the_scope_and_what_is_left() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let b = replica(&redis.settings());
    b.set_cap(day(), Some(Money::from_micros(100)));
    let held = b
        .acquire(&[day()], Money::from_micros(70))
        .await
        .expect("fits");
    let err = b
        .acquire(&[day()], Money::from_micros(70))
        .await
        .expect_err("over");
    let BudgetError::Exceeded(e) = &err else {
        panic!("{err}")
    };
    assert_eq!(e.available, Money::from_micros(30));
    assert!(
        err.to_string()
            .contains("budget for day 2026-11-30 exceeded")
    );
    // The unused part of a settled reservation comes back.
    held.settle(Money::from_micros(20)).await;
    drop(
        b.acquire(&[day()], Money::from_micros(80))
            .await
            .expect("80 of 100 left"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scope_must_fit_or_none_is_touched_and_alerts_cross_thresholds() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let b = replica(&redis.settings());
    let run = Scope::Run("r1".into());
    b.set_cap(run.clone(), Some(Money::from_micros(1_000)));
    b.set_cap(day(), Some(Money::from_micros(50)));
    let err = b
        .acquire(&[run.clone(), day()], Money::from_micros(60))
        .await
        .expect_err("day cap");
    assert!(
        matches!(&err, BudgetError::Exceeded(e) if e.scope == day()),
        "{err}"
    );
    assert_eq!(b.current(&run).await.expect("spend").reserved, Money::ZERO);
    let r = b
        .acquire(std::slice::from_ref(&run), Money::from_micros(600))
        .await
        .expect("fits");
    let alerts = r.settle(Money::from_micros(550)).await;
    assert_eq!(alerts.iter().map(|a| a.threshold).collect::<Vec<_>>(), [50]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holder_releases_its_reservation_when_the_lease_expires() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let settings = redis.settings();
    let cap = Money::from_micros(100);
    // The "crashing process": its own runtime, which dies with the reservation unsettled and
    // its renewal task gone.
    {
        let settings = settings.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let b = replica(&settings);
                b.set_cap(day(), Some(cap));
                let r = b.acquire(&[day()], cap).await.expect("fits");
                std::mem::forget(r);
            });
            drop(rt);
        })
        .join()
        .expect("thread");
    }
    let survivor = replica(&settings);
    survivor.set_cap(day(), Some(cap));
    assert!(
        matches!(
            survivor.acquire(&[day()], Money::from_micros(1)).await,
            Err(BudgetError::Exceeded(_))
        ),
        "the crashed holder's lease still holds the whole cap"
    );
    // The lease is 3 s in tests.
    tokio::time::sleep(Duration::from_millis(3_300)).await;
    let r = survivor
        .acquire(&[day()], cap)
        .await
        .expect("the expired lease was released");
    r.settle(cap).await;
    let spend = survivor.current(&day()).await.expect("spend");
    assert_eq!((spend.committed, spend.reserved), (cap, Money::ZERO));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_holder_keeps_its_lease_past_the_ttl() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let settings = redis.settings();
    let a = replica(&settings);
    let b = replica(&settings);
    let cap = Money::from_micros(100);
    a.set_cap(day(), Some(cap));
    b.set_cap(day(), Some(cap));
    let held = a.acquire(&[day()], cap).await.expect("fits");
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    assert!(
        matches!(
            b.acquire(&[day()], Money::from_micros(1)).await,
            Err(BudgetError::Exceeded(_))
        ),
        "a renewed lease must not expire while its call lasts"
    );
    held.settle(Money::from_micros(10)).await;
    drop(
        b.acquire(&[day()], Money::from_micros(90))
            .await
            .expect("released on settle"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_budgeted_calls_are_refused_and_resume_when_it_is_back() {
    let Some(mut redis) = TestRedis::start() else {
        return;
    };
    if std::env::var_os("AETHERFLOW_TEST_REDIS_URL").is_some() {
        return; // cannot stop a server this test did not start
    }
    let b = replica(&redis.settings());
    b.set_cap(day(), Some(Money::from_micros(100)));
    b.acquire(&[day()], Money::from_micros(10))
        .await
        .expect("fits")
        .settle(Money::from_micros(10))
        .await;
    redis.stop();
    let err = b
        .acquire(&[day()], Money::from_micros(10))
        .await
        .expect_err("fail closed");
    assert!(matches!(err, BudgetError::Unavailable(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("refused so that nothing is sent unbudgeted"),
        "{text}"
    );
    assert!(text.contains("127.0.0.1"), "names the server: {text}");
    redis.restart();
    // The connection is re-made on its own (the restarted server is empty, so the day starts
    // over from this process's seed).
    let mut resumed = false;
    for _ in 0..50 {
        if b.acquire(&[day()], Money::from_micros(10)).await.is_ok() {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resumed, "calls resume once Redis is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_together_grant_the_configured_rate() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let settings = redis.settings();
    let a = RedisRateLimiter::new(Shared::connect(&settings).expect("url"));
    let b = RedisRateLimiter::new(Shared::connect(&settings).expect("url"));
    let allowed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
        let allowed = Arc::clone(&allowed);
        tasks.push(tokio::spawn(async move {
            if let Verdict::Allowed { .. } = limiter.check("key:k1", 60).await.expect("redis") {
                allowed.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    // 60 a minute with the minute's allowance as a burst; one more may have refilled (1 a
    // second) while the 200 requests ran.
    let n = allowed.load(Ordering::SeqCst);
    assert!((60..=61).contains(&n), "allowed {n}");
    match a.check("key:k1", 60).await.expect("redis") {
        Verdict::Refused { retry_after } => {
            assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}");
        }
        v => panic!("{v:?}"),
    }
    // Another key has its own bucket.
    assert!(matches!(
        b.check("key:k2", 60).await.expect("redis"),
        Verdict::Allowed { remaining: 59 }
    ));
}

fn fail() -> ProviderError {
    ProviderError::Server {
        status: Some(503),
        message: "down".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opened_through_one_replica_is_open_on_the_other() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let settings = redis.settings();
    let policy = BreakerPolicy {
        consecutive_failures: 3,
        cooldown_ms: 1_000,
        half_open_probes: 1,
        ..BreakerPolicy::default()
    };
    let replica = || {
        Breakers::new(policy).with_store(Arc::new(RedisBreakers::new(
            Shared::connect(&settings).expect("url"),
        )))
    };
    let (a, b) = (replica(), replica());
    for _ in 0..3 {
        let p = a.admit("deepseek", "deepseek-chat").await.expect("closed");
        a.record(p, Err(&fail()));
    }
    // Outcomes are recorded in the background; the breaker opens within moments on B.
    let mut open_on_b = false;
    for _ in 0..50 {
        match b.admit("deepseek", "deepseek-chat").await {
            Err(open) => {
                assert!(open.retry_in <= Duration::from_millis(1_000));
                open_on_b = true;
                break;
            }
            Ok(p) => {
                // Not recorded: a success here could reset A's failure streak mid-way.
                drop(p);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(open_on_b, "B skips what failed for A");
    // Another model of the same provider is unaffected.
    let p = b
        .admit("deepseek", "deepseek-reasoner")
        .await
        .expect("closed");
    b.record(p, Ok(()));
    // After the cooldown one probe is let through across both replicas, not one each.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let probe = a.admit("deepseek", "deepseek-chat").await.expect("probe");
    assert!(
        b.admit("deepseek", "deepseek-chat").await.is_err(),
        "the probe slot is shared"
    );
    a.record(probe, Ok(()));
    let mut closed = false;
    for _ in 0..50 {
        if let Ok(p) = b.admit("deepseek", "deepseek-chat").await {
            b.record(p, Ok(()));
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "a successful probe closes the breaker for everyone");
    assert_eq!(a.local_fallbacks() + b.local_fallbacks(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_breakers_fall_back_to_the_process_and_count_it() {
    let settings = RedisSettings {
        url: Some("redis://127.0.0.1:9".to_owned().into()),
        timeout_ms: 200,
        ..RedisSettings::default()
    };
    let breakers = Breakers::new(BreakerPolicy::default()).with_store(Arc::new(
        RedisBreakers::new(Shared::connect(&settings).expect("url")),
    ));
    let p = breakers
        .admit("groq", "llama")
        .await
        .expect("local decides");
    breakers.record(p, Ok(()));
    assert_eq!(breakers.local_fallbacks(), 1);
}

fn pool() -> Arc<aetherflow_providers::keys::KeyPool> {
    use aetherflow_provider::ApiKey;
    Arc::new(
        aetherflow_providers::keys::KeyPool::new(
            "deepseek",
            vec![
                ApiKey::new("deepseek#1", "sk-first-0000000000000001".to_owned().into()),
                ApiKey::new("deepseek#2", "sk-second-000000000000002".to_owned().into()),
            ],
        )
        .expect("pool"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_refused_or_resting_in_one_replica_is_avoided_by_the_other() {
    use aetherflow_redis::keys::RedisKeyStates;
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let settings = redis.settings();
    let (a, b) = (pool(), pool());
    RedisKeyStates::new(Shared::connect(&settings).expect("url"))
        .spawn_sync(vec![Arc::clone(&a)], Duration::from_millis(100));
    RedisKeyStates::new(Shared::connect(&settings).expect("url"))
        .spawn_sync(vec![Arc::clone(&b)], Duration::from_millis(100));
    // Replica A's provider refuses key #1.
    a.report(
        "deepseek#1",
        Err(&ProviderError::Auth {
            message: "invalid key".into(),
        }),
    );
    let mut avoided = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if b.status()
            .iter()
            .any(|k| k.id == "deepseek#1" && k.quarantined.as_deref() == Some("auth"))
        {
            avoided = true;
            break;
        }
    }
    assert!(
        avoided,
        "B learns that key #1 was refused: {:?}",
        b.status()
    );
    for _ in 0..4 {
        assert_eq!(b.acquire().expect("key #2").id(), "deepseek#2");
    }
    // Replica B is rate limited on key #2: A rests it too, so A has no key for a while.
    b.report(
        "deepseek#2",
        Err(&ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
            message: "slow down".into(),
        }),
    );
    let mut resting = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if a.acquire().is_err() {
            resting = true;
            break;
        }
    }
    assert!(resting, "A rests key #2 too: {:?}", a.status());
    let secret = "sk-first-0000000000000001";
    let mut conn = redis::Client::open(redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let stored: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(format!("{}:keys:deepseek", redis.namespace()))
        .query_async(&mut conn)
        .await
        .expect("hgetall");
    assert_eq!(stored.len(), 2);
    assert!(
        stored
            .iter()
            .all(|(k, v)| !k.contains(secret) && !v.contains(secret)),
        "keys are stored by fingerprint only: {stored:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_keys_request_and_token_limits_hold_across_processes() {
    use aetherflow_providers::keys::{KeyPool, SharedPacer};
    let Some(redis) = TestRedis::start() else {
        return;
    };
    // Two processes' pools over the same key: 60 requests a minute (one a second, no burst)
    // and 100 prompt tokens a minute.
    let pool = || {
        let pool = KeyPool::new(
            "deepseek",
            vec![aetherflow_provider::ApiKey::new(
                "deepseek#1",
                "sk-shared-0000000000000001".to_owned().into(),
            )],
        )
        .expect("pool")
        .with_rate_limit(std::num::NonZeroU32::new(60))
        .with_token_limit(std::num::NonZeroU32::new(100));
        let pacer: std::sync::Arc<dyn SharedPacer> =
            std::sync::Arc::new(aetherflow_redis::ratelimit::RedisRateLimiter::new(
                Shared::connect(&redis.settings()).expect("url"),
            ));
        pool.pace_with(pacer);
        pool
    };
    let (a, b) = (pool(), pool());
    a.acquire_paced(Duration::ZERO, 10)
        .await
        .expect("the first call goes");
    // Each pool alone would send this at once; together they are one key's limit.
    let refused = b
        .acquire_paced(Duration::ZERO, 10)
        .await
        .expect_err("B waits for A's second");
    assert!(
        matches!(refused, aetherflow_provider::ProviderError::RateLimited { retry_after: Some(w), .. } if w <= Duration::from_secs(1)),
        "{refused:?}"
    );
    let started = std::time::Instant::now();
    b.acquire_paced(Duration::from_secs(3), 10)
        .await
        .expect("B's turn comes within the second");
    assert!(started.elapsed() >= Duration::from_millis(500), "B waited");
    // Tokens: 20 of 100 spent; A takes 70 more after its second, then B's 30 do not fit.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    a.acquire_paced(Duration::ZERO, 70).await.expect("fits");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let refused = b
        .acquire_paced(Duration::ZERO, 30)
        .await
        .expect_err("past the shared token budget");
    assert!(
        matches!(
            refused,
            aetherflow_provider::ProviderError::RateLimited { .. }
        ),
        "{refused:?}"
    );
    // Redis gone: each process's own limits decide again (A's own pacer has not been used).
    drop(redis);
    assert_eq!(a.local_fallbacks(), 0);
    a.acquire_paced(Duration::ZERO, 10)
        .await
        .expect("this process's own limits decide");
    assert_eq!(a.local_fallbacks(), 1, "counted for the metric");
}

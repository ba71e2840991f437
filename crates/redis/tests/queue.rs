//! The job queue against a real Redis: bounded, at-least-once, reclaimed from dead workers,
//! never handed to two live workers at once.

use std::collections::HashSet;
use std::time::Duration;

use aetherflow_redis::Shared;
use aetherflow_redis::queue::{Enqueued, RedisQueue};
use aetherflow_redis::testing::TestRedis;

fn queue(redis: &TestRedis, max_len: u64, visibility: Duration) -> RedisQueue {
    RedisQueue::new(
        Shared::connect(&redis.settings()).expect("url"),
        "runs",
        max_len,
        visibility,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_go_to_one_worker_each_in_order_and_the_queue_is_bounded() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let q = queue(&redis, 3, Duration::from_secs(30));
    q.ensure_group().await.expect("group");
    q.ensure_group().await.expect("idempotent");
    for n in 1..=3 {
        assert!(matches!(
            q.enqueue(&format!("job-{n}")).await.expect("redis"),
            Enqueued::Accepted(_)
        ));
    }
    assert_eq!(q.enqueue("job-4").await.expect("redis"), Enqueued::Full);
    assert_eq!(q.len().await.expect("redis"), 3);
    // Two workers on separate connections, asking at once, never get the same job.
    let other = queue(&redis, 3, Duration::from_secs(30));
    let (a, b) = tokio::join!(q.claim("worker-a"), other.claim("worker-b"));
    let (a, b) = (
        a.expect("redis").expect("a job"),
        b.expect("redis").expect("a job"),
    );
    assert_ne!(a.id, b.id);
    let mut seen: HashSet<String> = [a.payload.clone(), b.payload.clone()].into();
    assert!(seen.contains("job-1"), "oldest first: {seen:?}");
    assert_eq!((a.deliveries, b.deliveries), (1, 1));
    let c = q
        .claim("worker-a")
        .await
        .expect("redis")
        .expect("the third");
    seen.insert(c.payload.clone());
    assert_eq!(seen.len(), 3);
    assert_eq!(q.claim("worker-a").await.expect("redis"), None, "all taken");
    // Still held: the queue stays full until jobs are finished.
    assert_eq!(q.enqueue("job-4").await.expect("redis"), Enqueued::Full);
    for (worker, job) in [("worker-a", &a), ("worker-b", &b), ("worker-a", &c)] {
        assert!(q.ack(worker, job).await.expect("ack"));
    }
    assert_eq!(q.len().await.expect("redis"), 0);
    assert!(matches!(
        q.enqueue("job-4").await.expect("redis"),
        Enqueued::Accepted(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_job_is_reclaimed_after_the_visibility_timeout_but_a_live_one_is_not() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let visibility = Duration::from_millis(400);
    let q = queue(&redis, 10, visibility);
    q.ensure_group().await.expect("group");
    q.enqueue("dies").await.expect("redis");
    q.enqueue("lives").await.expect("redis");
    let dead = q.claim("worker-dead").await.expect("redis").expect("job");
    let live = q.claim("worker-live").await.expect("redis").expect("job");
    assert_eq!(
        (dead.payload.as_str(), live.payload.as_str()),
        ("dies", "lives")
    );
    // worker-live keeps renewing; worker-dead went silent.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(q.touch("worker-live", &live).await.expect("redis"));
    }
    let again = q
        .claim("worker-new")
        .await
        .expect("redis")
        .expect("the dead worker's job");
    assert_eq!(again.payload, "dies");
    assert_eq!(again.id, dead.id);
    assert_eq!(again.deliveries, 2, "a retry says so");
    assert_eq!(
        q.claim("worker-new").await.expect("redis"),
        None,
        "the live worker's job stays with it"
    );
    // The dead worker, were it to come back, no longer holds its job: it can neither renew,
    // acknowledge nor hand back the new holder's job.
    assert!(!q.touch("worker-dead", &dead).await.expect("redis"));
    assert!(!q.ack("worker-dead", &dead).await.expect("redis"));
    assert!(!q.hand_back("worker-dead", &dead).await.expect("redis"));
    assert_eq!(q.len().await.expect("redis"), 2, "nothing removed or added");
    assert!(q.ack("worker-new", &again).await.expect("ack"));
    assert!(q.ack("worker-live", &live).await.expect("ack"));
    assert!(q.is_empty().await.expect("redis"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_handed_back_goes_to_the_next_worker_at_once() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let q = queue(&redis, 10, Duration::from_secs(60));
    q.ensure_group().await.expect("group");
    q.enqueue("{\"run\":\"r1\"}").await.expect("redis");
    let job = q.claim("stopping").await.expect("redis").expect("job");
    assert!(q.hand_back("stopping", &job).await.expect("hand back"));
    let next = q.claim("other").await.expect("redis").expect("handed back");
    assert_eq!(next.payload, "{\"run\":\"r1\"}");
    assert_eq!(q.len().await.expect("redis"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_queue_says_so() {
    let settings = aetherflow_redis::RedisSettings {
        url: Some("redis://127.0.0.1:9".to_owned().into()),
        timeout_ms: 200,
        ..aetherflow_redis::RedisSettings::default()
    };
    let q = RedisQueue::new(
        Shared::connect(&settings).expect("url"),
        "runs",
        10,
        Duration::from_secs(1),
    );
    let err = q.enqueue("x").await.expect_err("no redis");
    assert!(err.contains("127.0.0.1:9"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_events_are_read_after_a_sequence_number_and_end_with_the_status() {
    use aetherflow_redis::events::{Published, RedisEvents};
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let events = RedisEvents::new(Shared::connect(&redis.settings()).expect("url"));
    assert!(events.read_after("r1", 0).await.expect("redis").is_empty());
    for seq in 1..=3 {
        events
            .publish("r1", seq, &format!(r#"{{"n":{seq}}}"#))
            .await
            .expect("redis");
    }
    events.publish("r2", 1, "other run").await.expect("redis");
    assert!(
        events.publish("r1", 2, "replayed").await.is_err(),
        "an event numbered below the last is refused"
    );
    assert_eq!(
        events.read_after("r1", 1).await.expect("redis"),
        [
            Published::Event(2, r#"{"n":2}"#.into()),
            Published::Event(3, r#"{"n":3}"#.into())
        ]
    );
    events.finish("r1", "succeeded").await.expect("redis");
    assert_eq!(
        events.read_after("r1", 3).await.expect("redis"),
        [Published::End("succeeded".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_job_is_found_behind_many_held_by_live_workers() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let visibility = Duration::from_millis(300);
    let q = queue(&redis, 100, visibility);
    q.ensure_group().await.expect("group");
    for n in 0..31 {
        q.enqueue(&format!("job-{n}")).await.expect("redis");
    }
    // 30 jobs held by live workers, the newest by one that dies.
    let mut live = Vec::new();
    for n in 0..30 {
        live.push(
            q.claim(&format!("live-{n}"))
                .await
                .expect("redis")
                .expect("job"),
        );
    }
    let dead = q.claim("dead").await.expect("redis").expect("job");
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (n, job) in live.iter().enumerate() {
        assert!(q.touch(&format!("live-{n}"), job).await.expect("redis"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = q
        .claim("new")
        .await
        .expect("redis")
        .expect("the dead worker's job, past 30 live ones");
    assert_eq!(again.id, dead.id);
}

//! The response cache's shared layer against a real Redis: an answer kept by one process is a
//! hit in another; the layer is bounded in number; a failing Redis is a miss, not an error.

use std::time::Duration;

use aetherflow_orchestrator::cache::{CacheSettings, ResponseCache};
use aetherflow_provider::{ChatRequest, ChatResponse, FinishReason, Message};
use aetherflow_redis::cache::RedisCache;
use aetherflow_redis::testing::TestRedis;
use aetherflow_redis::{RedisSettings, Shared};

fn replica(settings: &RedisSettings, max_entries: u64) -> ResponseCache {
    ResponseCache::new(&CacheSettings::default())
        .expect("enabled")
        .with_shared(RedisCache::new(
            Shared::connect(settings).expect("url"),
            Duration::from_secs(60),
            max_entries,
        ))
}

fn answer(text: &str) -> ChatResponse {
    ChatResponse {
        key_id: None,
        tool_calls: Vec::new(),
        model: "deepseek-chat".into(),
        text: text.into(),
        reasoning: None,
        finish_reason: FinishReason::Stop,
        usage: Default::default(),
    }
}

fn key(prompt: &str) -> [u8; 32] {
    ResponseCache::key(
        "deepseek",
        &ChatRequest {
            model: "deepseek-chat".into(),
            messages: vec![Message::user(prompt)],
            ..ChatRequest::default()
        },
    )
}

async fn eventually(cache: &ResponseCache, k: &[u8; 32]) -> Option<String> {
    for _ in 0..50 {
        if let Some(hit) = cache.lookup(k).await {
            return Some(hit.text.clone());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_kept_by_one_replica_is_a_hit_in_another_and_the_layer_is_bounded() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let settings = redis.settings();
    let (a, b) = (replica(&settings, 2), replica(&settings, 2));
    let long = "def f():\n    return 1\n".repeat(500);
    a.put(key("one"), answer(&long));
    assert_eq!(
        eventually(&b, &key("one")).await.as_deref(),
        Some(long.as_str())
    );
    // Kept in B's own layer now: found even without Redis.
    assert!(b.get(&key("one")).is_some());
    // A third answer evicts the oldest from the shared layer (max 2).
    a.put(key("two"), answer("2"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.put(key("three"), answer("3"));
    let c = replica(&settings, 2);
    assert_eq!(eventually(&c, &key("three")).await.as_deref(), Some("3"));
    assert_eq!(eventually(&c, &key("two")).await.as_deref(), Some("2"));
    assert!(c.lookup(&key("one")).await.is_none(), "evicted");
    // What is stored is compressed and keyed by hash: the prompt is nowhere.
    let mut conn = redis::Client::open(redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{}:cache}}:*", redis.namespace()))
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert_eq!(keys.len(), 3, "two entries and the index: {keys:?}");
    assert!(keys.iter().all(|k| !k.contains("three")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_shared_layer_is_a_miss_not_an_error() {
    let settings = RedisSettings {
        url: Some("redis://127.0.0.1:9".to_owned().into()),
        timeout_ms: 200,
        ..RedisSettings::default()
    };
    let cache = replica(&settings, 10);
    assert!(cache.lookup(&key("x")).await.is_none());
    assert!(cache.lookup(&key("y")).await.is_none());
    cache.put(key("x"), answer("local"));
    assert_eq!(
        cache
            .lookup(&key("x"))
            .await
            .map(|r| r.text.clone())
            .as_deref(),
        Some("local"),
        "the process's own layer still works"
    );
}

//! Decoding cost per provider: a typical non-streaming answer, and a 200-chunk stream folded
//! into events. `cargo bench -p aetherflow-providers --bench decode`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use aetherflow_providers::wire::ChunkFold;
use aetherflow_providers::{gemini, openai};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// About 1 500 characters of generated code, the size of a typical step answer.
fn code() -> String {
    let line = "    result = compute_value(item, factor=2) + offset  # keep\\n";
    format!("```python path=app/service.py\\n{}```\\n", line.repeat(25))
}

fn openai_body(usage: &str) -> String {
    format!(
        r#"{{"id":"chatcmpl-3e9b","object":"chat.completion","created":1763990700,"model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"{}"}},"logprobs":null,"finish_reason":"stop"}}],"usage":{usage},"system_fingerprint":"fp_4e5a1f2b9c"}}"#,
        code()
    )
}

fn openai_chunks(last_usage: &str) -> Vec<String> {
    let mut chunks: Vec<String> = (0..199)
        .map(|i| {
            format!(
                r#"{{"id":"c","object":"chat.completion.chunk","created":1763990760,"model":"m","choices":[{{"index":0,"delta":{{"content":"token{i} "}},"logprobs":null,"finish_reason":null}}]}}"#
            )
        })
        .collect();
    chunks.push(last_usage.to_owned());
    chunks
}

fn bench(c: &mut Criterion) {
    let providers: [(&str, String, Vec<String>); 4] = [
        (
            "deepseek",
            openai_body(r#"{"prompt_tokens":1200,"completion_tokens":400,"total_tokens":1600,"prompt_tokens_details":{"cached_tokens":0},"prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":1200}"#),
            openai_chunks(r#"{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":""},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":200,"total_tokens":212}}"#),
        ),
        (
            "groq",
            openai_body(r#"{"queue_time":0.04,"prompt_tokens":1200,"prompt_time":0.002,"completion_tokens":400,"completion_time":0.004,"total_tokens":1600,"total_time":0.007}"#),
            openai_chunks(r#"{"id":"c","object":"chat.completion.chunk","model":"m","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":200,"total_tokens":212},"x_groq":{"id":"req_1","usage":{"prompt_tokens":12,"completion_tokens":200,"total_tokens":212}}}"#)
                .into_iter()
                .chain([r#"{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#.to_owned()])
                .collect(),
        ),
        (
            "kimi",
            openai_body(r#"{"prompt_tokens":1200,"completion_tokens":400,"total_tokens":1600,"cached_tokens":0}"#),
            openai_chunks(r#"{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop","usage":{"prompt_tokens":12,"completion_tokens":200,"total_tokens":212}}]}"#),
        ),
        (
            "codestral",
            openai_body(r#"{"prompt_tokens":1200,"completion_tokens":400,"total_tokens":1600}"#),
            openai_chunks(r#"{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"end"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":200,"total_tokens":212}}"#),
        ),
    ];

    let mut group = c.benchmark_group("decode");
    for (name, body, chunks) in &providers {
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{name}/response"), |b| {
            b.iter(|| openai::parse_completion(body.as_bytes(), "m").expect("parses"));
        });
        group.throughput(Throughput::Elements(chunks.len() as u64));
        group.bench_function(format!("{name}/stream_200"), |b| {
            b.iter_batched(
                openai::ChunkFolder::default,
                |mut folder| {
                    for chunk in chunks {
                        folder.push(chunk).expect("chunk");
                    }
                    folder.finish().expect("finished")
                },
                BatchSize::SmallInput,
            );
        });
    }

    let gemini_body = format!(
        r#"{{"candidates":[{{"content":{{"parts":[{{"text":"{}"}}],"role":"model"}},"finishReason":"STOP","index":0}}],"usageMetadata":{{"promptTokenCount":1200,"candidatesTokenCount":400,"totalTokenCount":1600}},"modelVersion":"gemini-2.5-flash","responseId":"kQ8x"}}"#,
        code()
    );
    let gemini_chunks: Vec<String> = (0..200)
        .map(|i| {
            let finish = if i == 199 { r#","finishReason": "STOP""# } else { "" };
            format!(
                r#"{{"candidates": [{{"content": {{"parts": [{{"text": "token{i} "}}],"role": "model"}}{finish},"index": 0}}],"usageMetadata": {{"promptTokenCount": 9,"candidatesTokenCount": {i},"totalTokenCount": 52}},"modelVersion": "gemini-2.5-flash","responseId": "rA8x"}}"#
            )
        })
        .collect();
    group.throughput(Throughput::Elements(1));
    group.bench_function("gemini/response", |b| {
        b.iter(|| gemini::parse_response(gemini_body.as_bytes(), "m").expect("parses"));
    });
    group.throughput(Throughput::Elements(200));
    group.bench_function("gemini/stream_200", |b| {
        b.iter_batched(
            gemini::ChunkFolder::default,
            |mut folder| {
                for chunk in &gemini_chunks {
                    folder.push(chunk).expect("chunk");
                }
                folder.finish().expect("finished")
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

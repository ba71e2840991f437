//! Orchestrator overhead per step with the mock provider at zero latency: everything a step
//! costs apart from the model itself (scheduling, prompt assembly, events, bookkeeping).
//!
//! `cargo bench -p aetherflow-orchestrator --bench overhead`; criterion reports the time per
//! element, i.e. per step. Target: ≤ 50 µs per step.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::num::NonZeroUsize;
use std::sync::Arc;

use aetherflow_domain::plan::{PlanFormat, ValidPlan, load_plan};
use aetherflow_orchestrator::workspace::{ContextLimits, Workspace};
use aetherflow_orchestrator::{EventSink, Orchestrator, RunOptions, mock_provider_set};
use aetherflow_provider::mock::MockProvider;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio_util::sync::CancellationToken;

const STEPS: usize = 1000;

fn step(i: usize, deps: &str) -> String {
    step_with_files(i, deps, &format!("\"m{i}.py\""))
}

fn step_with_files(i: usize, deps: &str, files: &str) -> String {
    format!(
        r#"{{"id":"s{i}","description":"Write module {i}","type":"code_generation","complexity":0.3,"estimated_tokens":800,"dependencies":[{deps}],"validation_criteria":["works"],"context":{{"language":"python","files":[{files}]}}}}"#
    )
}

/// Each step depends on the one before and names one target file (which the workspace check
/// looks up); `with_files = false` leaves the file list empty to isolate scheduling.
fn chain(with_files: bool) -> Arc<ValidPlan> {
    let steps: Vec<String> = (0..STEPS)
        .map(|i| {
            let deps = if i == 0 {
                String::new()
            } else {
                format!("\"s{}\"", i - 1)
            };
            let files = if with_files {
                format!("\"m{i}.py\"")
            } else {
                String::new()
            };
            step_with_files(i, &deps, &files)
        })
        .collect();
    build(&steps)
}

fn wide() -> Arc<ValidPlan> {
    // One root, 998 independent middle steps, one sink that depends on ten of them.
    let mut steps = vec![step(0, "")];
    steps.extend((1..STEPS - 1).map(|i| step(i, "\"s0\"")));
    let sink_deps: Vec<String> = (1..=10).map(|i| format!("\"s{i}\"")).collect();
    steps.push(step(STEPS - 1, &sink_deps.join(",")));
    build(&steps)
}

fn build(steps: &[String]) -> Arc<ValidPlan> {
    let text = format!(
        r#"{{"task_id":"bench","description":"Benchmark plan","steps":[{}]}}"#,
        steps.join(",")
    );
    Arc::new(load_plan(&text, PlanFormat::Json).expect("valid bench plan"))
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("workspace");
    let workspace = Workspace::open(dir.path(), ContextLimits::default()).expect("workspace");
    let orchestrator = Orchestrator::new(mock_provider_set(MockProvider::default()), workspace);
    let options = RunOptions {
        concurrency: NonZeroUsize::new(64).expect("non-zero"),
        ..RunOptions::default()
    };
    // The CLI runs on a multi-threaded runtime; each actix-web worker of the API runs a
    // single-threaded one.
    let runtimes = [
        (
            "multi_thread",
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        ),
        (
            "current_thread",
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        ),
    ];

    let mut group = c.benchmark_group("orchestrator_overhead");
    group.throughput(Throughput::Elements(STEPS as u64));
    group.sample_size(20);
    for (flavour, runtime) in &runtimes {
        for (name, plan) in [
            ("chain_1000", chain(true)),
            ("chain_1000_no_files", chain(false)),
            ("wide_1000", wide()),
        ] {
            group.bench_function(format!("{flavour}/{name}"), |b| {
                b.to_async(runtime).iter(|| async {
                    let outcome = orchestrator
                        .run(
                            Arc::clone(&plan),
                            &options,
                            EventSink::none(),
                            CancellationToken::new(),
                        )
                        .await
                        .expect("run");
                    assert_eq!(outcome.report.totals.succeeded, STEPS);
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

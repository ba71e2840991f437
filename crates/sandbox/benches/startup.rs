//! Sandbox start-up benchmark: p50/p95 over many runs of `print(1+1)` and of a 50-line
//! pure-Python script, with the compiled-module cache warm, broken down into load (once per
//! process), instantiate, interpreter start-up and user code.
//!
//! `cargo bench -p aetherflow-sandbox --bench startup [-- RUNS]` (default 100 runs each).

use std::time::{Duration, Instant};

use aetherflow_sandbox::{RunRequest, Sandbox, SandboxConfig};

const SCRIPT_50_LINES: &str = r#"
def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def primes(limit):
    sieve = [True] * (limit + 1)
    sieve[0] = sieve[1] = False
    for i in range(2, int(limit ** 0.5) + 1):
        if sieve[i]:
            for j in range(i * i, limit + 1, i):
                sieve[j] = False
    return [i for i, p in enumerate(sieve) if p]


class Account:
    def __init__(self, owner):
        self.owner = owner
        self.balance = 0
        self.history = []

    def deposit(self, amount):
        if amount <= 0:
            raise ValueError("amount must be positive")
        self.balance += amount
        self.history.append(("deposit", amount))

    def withdraw(self, amount):
        if amount > self.balance:
            raise ValueError("insufficient funds")
        self.balance -= amount
        self.history.append(("withdraw", amount))


def word_counts(text):
    counts = {}
    for word in text.lower().split():
        word = word.strip(".,!?")
        counts[word] = counts.get(word, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


acct = Account("ada")
for amount in (10, 20, 30):
    acct.deposit(amount)
acct.withdraw(15)
print(fib(30), len(primes(2000)), acct.balance)
print(word_counts("the quick brown fox jumps over the lazy dog. The end!")[:3])
"#;

struct Sample {
    instantiate: Duration,
    execute: Duration,
    total: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summary(name: &str, samples: &[Sample]) -> (Duration, Duration) {
    let pick = |f: fn(&Sample) -> Duration| {
        let mut v: Vec<Duration> = samples.iter().map(f).collect();
        v.sort();
        (percentile(&v, 0.5), percentile(&v, 0.95))
    };
    let (total50, total95) = pick(|s| s.total);
    let (inst50, inst95) = pick(|s| s.instantiate);
    let (exec50, exec95) = pick(|s| s.execute);
    println!(
        "{name:<22} total p50 {total50:>9.2?} p95 {total95:>9.2?} | instantiate p50 {inst50:>8.2?} p95 {inst95:>8.2?} | execute p50 {exec50:>9.2?} p95 {exec95:>9.2?}"
    );
    (total50, exec50)
}

fn measure(sandbox: &Sandbox, code: &str, runs: usize) -> Vec<Sample> {
    let request = RunRequest::code(code);
    // One warm-up run (page cache, lazy init).
    let _ = sandbox.run_blocking(&request);
    (0..runs)
        .map(|_| {
            let started = Instant::now();
            let out = sandbox.run_blocking(&request).expect("sandbox runs");
            assert!(out.success(), "{out:?}");
            Sample {
                instantiate: out.timings.instantiate,
                execute: out.timings.execute,
                total: started.elapsed(),
            }
        })
        .collect()
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100)
        .max(50);
    // Make sure the cache is warm, then time a fresh load from it.
    drop(
        Sandbox::new(SandboxConfig::default())
            .expect("sandbox (run scripts/fetch-sandbox-runtime.py)"),
    );
    let started = Instant::now();
    let sandbox = Sandbox::new(SandboxConfig::default()).expect("sandbox");
    let load = started.elapsed();
    let report = sandbox.load_report().expect("built by new");
    println!(
        "load (once per process): {load:.2?} = verify runtime hashes {:.2?} + module from {:?} {:.2?} + link/InstancePre {:.2?}",
        report.verify, report.source, report.load, report.link
    );
    println!("{runs} runs each, sequential, one thread");
    let empty = measure(&sandbox, "pass", runs);
    let (_, startup) = summary("empty script (start-up)", &empty);
    let hello = measure(&sandbox, "print(1+1)", runs);
    let (hello50, hello_exec) = summary("print(1+1)", &hello);
    let script = measure(&sandbox, SCRIPT_50_LINES, runs);
    let (script50, script_exec) = summary("50-line script", &script);
    println!(
        "breakdown (p50): interpreter start-up ≈ {startup:.2?}; user code ≈ {:.2?} (print) and {:.2?} (50 lines)",
        hello_exec.saturating_sub(startup),
        script_exec.saturating_sub(startup)
    );
    let peak = sandbox
        .run_blocking(&RunRequest::code("pass"))
        .map(|o| o.memory_peak_bytes)
        .unwrap_or(0);
    println!(
        "linear memory after start-up: {:.1} MiB (the size of a pre-initialised snapshot's memory image)",
        peak as f64 / (1 << 20) as f64
    );
    println!(
        "target p50 <= 100 ms: print(1+1) {} ({hello50:.2?}), 50-line script {} ({script50:.2?})",
        if hello50 <= Duration::from_millis(100) {
            "met"
        } else {
            "MISSED"
        },
        if script50 <= Duration::from_millis(100) {
            "met"
        } else {
            "MISSED"
        },
    );
}

//! Usage anomaly alerts: per provider, spend and error rate are summed over fixed windows; a
//! rolling baseline (the mean of the previous windows) is kept, and a window whose spend or
//! error rate passes `factor` × baseline raises one alert of that kind per window.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use aetherflow_domain::Money;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// `[alerts]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertPolicy {
    /// Window length, in seconds.
    pub window_secs: u64,
    /// Windows in the baseline.
    pub baseline_windows: usize,
    /// How far above the baseline counts as a spike.
    pub factor: f64,
    /// Calls a window needs before its error rate is judged.
    pub min_calls: u32,
    /// Where alerts are POSTed as JSON, if anywhere.
    pub webhook_url: Option<String>,
}

impl Default for AlertPolicy {
    fn default() -> Self {
        AlertPolicy {
            window_secs: 300,
            baseline_windows: 12,
            factor: 3.0,
            min_calls: 5,
            webhook_url: None,
        }
    }
}

/// What spiked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Spend in the window.
    Spend,
    /// Share of failed calls in the window.
    ErrorRate,
}

/// One spike.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageAlert {
    /// The provider.
    pub provider: String,
    /// What spiked.
    pub kind: AlertKind,
    /// The value in the current window (micro-dollars, or a fraction for error rates).
    pub current: f64,
    /// The baseline it is compared with.
    pub baseline: f64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    spend: u64,
    calls: u32,
    failures: u32,
}

#[derive(Debug)]
struct Track {
    started: Instant,
    current: Window,
    history: VecDeque<Window>,
    alerted: Vec<AlertKind>,
}

/// Watches usage per provider; share one per process.
#[derive(Debug)]
pub struct UsageMonitor {
    policy: AlertPolicy,
    tracks: Mutex<HashMap<String, Track>>,
}

impl UsageMonitor {
    /// A monitor following `policy`.
    pub fn new(policy: AlertPolicy) -> Self {
        UsageMonitor {
            policy,
            tracks: Mutex::new(HashMap::new()),
        }
    }

    /// The policy (for the webhook URL).
    pub fn policy(&self) -> &AlertPolicy {
        &self.policy
    }

    /// Records one call and returns the alerts it raises.
    pub fn observe(&self, provider: &str, cost: Money, failed: bool) -> Vec<UsageAlert> {
        let now = Instant::now();
        let window = Duration::from_secs(self.policy.window_secs.max(1));
        let mut tracks = self
            .tracks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let track = tracks.entry(provider.to_owned()).or_insert_with(|| Track {
            started: now,
            current: Window::default(),
            history: VecDeque::new(),
            alerted: Vec::new(),
        });
        while now.duration_since(track.started) >= window {
            track.history.push_back(track.current);
            while track.history.len() > self.policy.baseline_windows.max(1) {
                track.history.pop_front();
            }
            track.current = Window::default();
            track.alerted.clear();
            track.started += window;
        }
        track.current.spend = track.current.spend.saturating_add(cost.as_micros());
        track.current.calls += 1;
        track.current.failures += u32::from(failed);

        let mut alerts = Vec::new();
        if track.history.is_empty() {
            return alerts;
        }
        let n = track.history.len() as f64;
        let base_spend = track.history.iter().map(|w| w.spend as f64).sum::<f64>() / n;
        let spend = track.current.spend as f64;
        if base_spend > 0.0
            && spend > self.policy.factor * base_spend
            && !track.alerted.contains(&AlertKind::Spend)
        {
            track.alerted.push(AlertKind::Spend);
            alerts.push(UsageAlert {
                provider: provider.to_owned(),
                kind: AlertKind::Spend,
                current: spend,
                baseline: base_spend,
            });
        }
        let (calls, fails) = track
            .history
            .iter()
            .fold((0u32, 0u32), |(c, f), w| (c + w.calls, f + w.failures));
        let base_rate = if calls == 0 {
            0.0
        } else {
            f64::from(fails) / f64::from(calls)
        };
        let rate = f64::from(track.current.failures) / f64::from(track.current.calls);
        // A provider that never failed still alerts when half its calls fail.
        let threshold = (self.policy.factor * base_rate).clamp(0.5, 1.0);
        if track.current.calls >= self.policy.min_calls
            && rate >= threshold
            && rate > base_rate
            && !track.alerted.contains(&AlertKind::ErrorRate)
        {
            track.alerted.push(AlertKind::ErrorRate);
            alerts.push(UsageAlert {
                provider: provider.to_owned(),
                kind: AlertKind::ErrorRate,
                current: rate,
                baseline: base_rate,
            });
        }
        alerts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor() -> UsageMonitor {
        UsageMonitor::new(AlertPolicy {
            window_secs: 60,
            baseline_windows: 3,
            factor: 3.0,
            min_calls: 4,
            webhook_url: None,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_spend_spike_alerts_once_per_window() {
        let m = monitor();
        for _ in 0..3 {
            assert!(m.observe("p", Money::from_micros(100), false).is_empty());
            tokio::time::advance(Duration::from_secs(60)).await;
        }
        assert!(
            m.observe("p", Money::from_micros(250), false).is_empty(),
            "2.5× is no spike"
        );
        let alerts = m.observe("p", Money::from_micros(100), false);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].kind, AlertKind::Spend);
        assert_eq!(alerts[0].baseline, 100.0);
        assert!(
            m.observe("p", Money::from_micros(500), false).is_empty(),
            "once per window"
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(m.observe("p", Money::from_micros(10), false).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_burst_alerts() {
        let m = monitor();
        for _ in 0..10 {
            m.observe("p", Money::ZERO, false);
        }
        tokio::time::advance(Duration::from_secs(60)).await;
        let mut raised = Vec::new();
        for _ in 0..4 {
            raised.extend(m.observe("p", Money::ZERO, true));
        }
        assert_eq!(raised.len(), 1);
        assert_eq!(raised[0].kind, AlertKind::ErrorRate);
        assert!(
            m.observe("q", Money::ZERO, true).is_empty(),
            "providers are tracked apart"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_baseline_no_alert() {
        let m = monitor();
        for _ in 0..10 {
            assert!(
                m.observe("p", Money::from_micros(1_000_000), true)
                    .is_empty()
            );
        }
    }
}

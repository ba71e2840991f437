//! The queue worker (`aetherflow-api worker`): takes plan runs from the Redis queue that API
//! replicas fill, and runs them with the shared orchestrator (see ADR 0016).
//!
//! Delivery is at least once. While it runs a job, a worker renews it every third of the
//! visibility timeout; a worker that dies (SIGKILL, a lost node) stops renewing, and once the
//! timeout has passed the next worker that asks takes the job over and resumes the run: steps
//! the dead worker recorded as finished are restored, not sent or applied again. A job that
//! keeps killing its workers is given up after `max_deliveries`. On SIGTERM a worker stops
//! taking jobs, lets the ones it holds finish within the grace period, then stops them and
//! hands them back for another worker. A job is acknowledged only after the run's end is in
//! the store.

use std::sync::Arc;
use std::time::Duration;

use aetherflow_redis::queue::{Delivery, RedisQueue};
use aetherflow_redis::signals::RedisSignals;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::jobs::{Claimed, JobMessage, Jobs};
use crate::store::RunState;

/// How a worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// This worker's name in the consumer group (unique per process).
    pub name: String,
    /// Runs held at once.
    pub concurrency: usize,
    /// Deliveries of one job before it is given up as failed.
    pub max_deliveries: u64,
    /// How long held runs may go on after a stop is asked before they are stopped and handed
    /// back.
    pub grace: Duration,
    /// How often an idle worker asks for a job.
    pub poll: Duration,
    /// How often the worker looks for runs lost before they reached the queue.
    pub sweep_every: Duration,
}

impl WorkerOptions {
    /// Options with a unique name (`<host>-<pid>-<random>`).
    pub fn named_uniquely(concurrency: usize, max_deliveries: u64, grace: Duration) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
        WorkerOptions {
            name: format!(
                "{host}-{}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            concurrency: concurrency.max(1),
            max_deliveries: max_deliveries.max(1),
            grace,
            poll: Duration::from_millis(100),
            sweep_every: Duration::from_secs(60),
        }
    }
}

/// A queue worker.
#[derive(Debug, Clone)]
pub struct Worker {
    jobs: Jobs,
    queue: RedisQueue,
    signals: RedisSignals,
    options: Arc<WorkerOptions>,
}

impl Worker {
    /// A worker taking jobs from `queue` and running them with `jobs` (whose store every API
    /// replica shares).
    pub fn new(
        jobs: Jobs,
        queue: RedisQueue,
        signals: RedisSignals,
        options: WorkerOptions,
    ) -> Self {
        Worker {
            jobs,
            queue,
            signals,
            options: Arc::new(options),
        }
    }

    /// Takes and runs jobs until `shutdown` fires; then lets held jobs finish within the grace
    /// period, stops and hands back the rest, and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(worker = %self.options.name, concurrency = self.options.concurrency, "worker started");
        loop {
            match self.queue.ensure_group().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "the run queue (Redis) does not answer yet; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        {
            let (worker, shutdown) = (self.clone(), shutdown.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(worker.options.sweep_every);
                every.tick().await;
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        _ = every.tick() => {}
                    }
                    match worker.sweep().await {
                        Ok(0) => {}
                        Ok(n) => tracing::warn!(
                            runs = n,
                            "runs lost before they reached the queue are recorded as failed"
                        ),
                        Err(e) => tracing::debug!(error = %e, "no sweep for lost runs this time"),
                    }
                }
            });
        }
        let slots = Arc::new(Semaphore::new(self.options.concurrency));
        let stop_all = CancellationToken::new();
        let mut held = JoinSet::new();
        loop {
            while held.try_join_next().is_some() {}
            let permit = tokio::select! {
                permit = Arc::clone(&slots).acquire_owned() => permit,
                () = shutdown.cancelled() => break,
            };
            let Ok(permit) = permit else { break };
            // Not raced against the shutdown: a claim the script made must not be dropped (the
            // job would wait out the visibility timeout); it runs, or is handed back.
            let claimed = self.queue.claim(&self.options.name).await;
            match claimed {
                Ok(Some(delivery)) => {
                    let worker = self.clone();
                    let stop = stop_all.child_token();
                    held.spawn(async move {
                        worker.handle(delivery, stop).await;
                        drop(permit);
                    });
                }
                Ok(None) => {
                    drop(permit);
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(self.options.poll) => {}
                    }
                }
                Err(e) => {
                    drop(permit);
                    tracing::warn!(error = %e, "no job taken: the run queue (Redis) does not answer");
                    if e.contains("NOGROUP") {
                        // Redis lost the queue (restarted without persistence): make it again.
                        let _ = self.queue.ensure_group().await;
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        if !held.is_empty() {
            tracing::info!(
                runs = held.len(),
                grace_secs = self.options.grace.as_secs(),
                "stopping: the runs in hand get the grace period"
            );
            let all_done = async { while held.join_next().await.is_some() {} };
            if tokio::time::timeout(self.options.grace, all_done)
                .await
                .is_err()
            {
                tracing::warn!(
                    runs = held.len(),
                    "grace period over: handing the runs back"
                );
                stop_all.cancel();
                while held.join_next().await.is_some() {}
            }
        }
        tracing::info!(worker = %self.options.name, "worker stopped");
    }

    /// Runs one delivered job to its end, or until this worker stops or loses it.
    async fn handle(&self, delivery: Delivery, stop: CancellationToken) {
        let message: JobMessage = match serde_json::from_str(&delivery.payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(job = %delivery.id, error = %e, "an unreadable job is dropped");
                self.ack(&delivery).await;
                return;
            }
        };
        let span = crate::jobs::job_span(&message.run_id, message.workflow);
        crate::trace::continue_trace(&span, &message.trace);
        self.handle_message(delivery, message, stop)
            .instrument(span)
            .await;
    }

    async fn handle_message(
        &self,
        delivery: Delivery,
        message: JobMessage,
        stop: CancellationToken,
    ) {
        let run_id = message.run_id.clone();
        if delivery.deliveries > self.options.max_deliveries {
            tracing::error!(run = %run_id, deliveries = delivery.deliveries, "given up: the run's workers stopped too often");
            if self
                .end_unstarted(
                    &run_id,
                    RunState::Failed,
                    format!(
                        "given up after {} deliveries: every worker that took this run stopped before its end (see the workers' logs)",
                        delivery.deliveries - 1
                    ),
                )
                .await
            {
                self.ack(&delivery).await;
            }
            return;
        }
        if matches!(self.signals.cancel_requested(&run_id).await, Ok(true)) {
            if self
                .end_unstarted(
                    &run_id,
                    RunState::Cancelled,
                    "cancelled before it started".into(),
                )
                .await
            {
                self.ack(&delivery).await;
            }
            return;
        }
        if delivery.deliveries > 1 {
            tracing::info!(run = %run_id, deliveries = delivery.deliveries, "taking over a run another worker held");
        }
        // Keep the job while it runs; if it went to another worker, stop.
        let lost = CancellationToken::new();
        let halt = stop.child_token();
        let keeper = {
            let (queue, name, delivery, lost, halt) = (
                self.queue.clone(),
                self.options.name.clone(),
                delivery.clone(),
                lost.clone(),
                halt.clone(),
            );
            let every = (queue.visibility() / 3).max(Duration::from_millis(500));
            // Unrenewed for this long, the job may already be another worker's: stop before
            // the visibility timeout lets one take it over, so two never run it at once.
            let give_up = queue.visibility().saturating_sub(every / 2);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                let mut renewed = tokio::time::Instant::now();
                loop {
                    tick.tick().await;
                    match queue.touch(&name, &delivery).await {
                        Ok(true) => renewed = tokio::time::Instant::now(),
                        Ok(false) => {
                            tracing::warn!(job = %delivery.id, "the job went to another worker: stopping this copy");
                            lost.cancel();
                            halt.cancel();
                            return;
                        }
                        Err(e) if renewed.elapsed() >= give_up => {
                            tracing::error!(job = %delivery.id, error = %e, "the job could not be renewed in time: stopping this copy (another worker takes the run over)");
                            lost.cancel();
                            halt.cancel();
                            return;
                        }
                        Err(e) => tracing::warn!(job = %delivery.id, error = %e, "job not renewed"),
                    }
                }
            })
        };
        let outcome = self.jobs.run_claimed(&message, halt).await;
        keeper.abort();
        match outcome {
            Ok(Claimed::Finished(state)) => {
                tracing::debug!(run = %run_id, status = state.as_str(), "job done");
                self.ack(&delivery).await;
            }
            Ok(Claimed::Stopped) if lost.is_cancelled() => {}
            Ok(Claimed::Stopped) => {
                self.jobs.requeued(&run_id).await;
                match self.queue.hand_back(&self.options.name, &delivery).await {
                    Ok(true) => tracing::info!(run = %run_id, "handed back for another worker"),
                    Ok(false) => {
                        tracing::info!(run = %run_id, "not handed back: another worker holds it already")
                    }
                    Err(e) => {
                        tracing::warn!(run = %run_id, error = %e, "not handed back: another worker takes it after the visibility timeout")
                    }
                }
            }
            Err(e) => {
                // The store does not answer (or lost the run): leave the job for a retry.
                tracing::error!(run = %run_id, error = %e, "the run could not be taken up, or its end was not stored: the job is delivered again after the visibility timeout");
            }
        }
    }

    /// Records as failed the runs that will never run: queued or running in the store, their
    /// owner silent for a minute (PostgreSQL's heartbeat), and no job for them in the queue —
    /// an API replica that died between recording a run and queueing it, or a Redis that lost
    /// its data. How many.
    pub async fn sweep(&self) -> Result<usize, String> {
        let candidates = self
            .jobs
            .store()
            .unfinished_and_unowned(crate::pg::STALE_AFTER)
            .await
            .map_err(|e| e.to_string())?;
        if candidates.is_empty() {
            return Ok(0);
        }
        // Read after the candidates: a job queued since was recorded with a fresh heartbeat.
        let held: std::collections::HashSet<String> = self
            .queue
            .payloads()
            .await?
            .iter()
            .filter_map(|p| serde_json::from_str::<JobMessage>(p).ok())
            .map(|m| m.run_id)
            .collect();
        let mut swept = 0;
        for mut record in candidates {
            if held.contains(&record.id) {
                continue;
            }
            tracing::warn!(run = %record.id, status = record.status.as_str(), "a run no worker will take: recorded as failed");
            self.jobs
                .end_unstarted(
                    &mut record,
                    RunState::Failed,
                    Some("lost before a worker took it (the API replica that accepted it stopped before queueing it, or Redis lost the queue); submit it again".into()),
                )
                .await?;
            swept += 1;
        }
        Ok(swept)
    }

    /// Records the end of a run that will not run; true when it is stored (or was already
    /// over), so the job may be acknowledged.
    async fn end_unstarted(&self, run_id: &str, status: RunState, error: String) -> bool {
        let outcome = match self.jobs.store().run(run_id).await {
            Ok(Some(mut record))
                if !record.status.is_final() || record.status == RunState::Interrupted =>
            {
                self.jobs
                    .end_unstarted(&mut record, status, Some(error))
                    .await
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(run = run_id, error = %e, "the run's end not stored: the job is delivered again");
                false
            }
        }
    }

    async fn ack(&self, delivery: &Delivery) {
        match self.queue.ack(&self.options.name, delivery).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(job = %delivery.id, "not acknowledged: another worker took the job over and ends it")
            }
            Err(e) => {
                tracing::warn!(job = %delivery.id, error = %e, "job not acknowledged: it may be delivered again (its run is already recorded as ended)")
            }
        }
    }
}

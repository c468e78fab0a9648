//! Calling plugins: `invoke` (capabilities), `check` (health checks) and
//! `recover` (recovery strategies), and how calls are counted.
//!
//! All three take one path: [`Plugins::begin`] → a call slot →
//! `Runtime::call` → [`CallRecord::finish`], so every kind of plugin gets
//! the same limits, isolation, counters and error kinds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use serde::Serialize;

use super::Plugins;
use super::errors::InvokeError;
use super::host_api::{CallId, HostContext};
use super::manifest::Manifest;
use super::outcome::CallError;
use super::reach::{Reach, TargetAddress};
use super::registry::{LoadedPlugin, PluginKey};
use super::reports::{HealthReport, Incident, RecoveryReport};
use crate::names::Name;

/// Who a call is made for, beyond the plugin itself.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// Worker the call runs for.
    pub worker_id: Option<String>,
    /// Task, execution or incident it serves.
    pub subject_id: Option<String>,
}

/// Totals over every plugin, for `/metrics`.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginTotals {
    /// Plugins serving.
    pub loaded: u64,
    /// Plugins whose last load failed.
    pub failed: u64,
    /// Calls since start.
    pub calls: u64,
    /// Failed calls since start.
    pub failures: u64,
    /// Time spent in calls since start, in seconds.
    pub call_seconds: f64,
}

/// Counters of one plugin's calls.
#[derive(Debug, Default)]
pub(super) struct CallStats {
    calls: AtomicU64,
    failures: AtomicU64,
    micros: AtomicU64,
}

impl CallStats {
    /// Calls finished, failed or not.
    pub(super) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Calls that failed.
    pub(super) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Time spent in calls, in microseconds.
    fn micros(&self) -> u64 {
        self.micros.load(Ordering::Relaxed)
    }

    /// Counts one finished call that took `elapsed`.
    fn count(&self, elapsed: Duration, failed: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Plugins {
    /// Runs one capability of a team's plugin on JSON input.
    pub async fn invoke(
        &self,
        team: &Name,
        name: &Name,
        capability: &str,
        input: &serde_json::Value,
        caller: Caller,
    ) -> Result<serde_json::Value, InvokeError> {
        let (plugin, host) = self.begin(team, name, caller)?;
        let record = CallRecord::new(&plugin, host.call_id, capability);
        if !plugin.offers(capability) {
            return Err(InvokeError::UnknownCapability {
                plugin: format!("{team}/{name}"),
                capability: capability.to_owned(),
            });
        }
        let outcome = async {
            let input = serde_json::to_string(input)
                .map_err(|err| CallError::InvalidInput(err.to_string()))?;
            let _slot = slot(&plugin).await?;
            let output = self
                .runtime
                .invoke(
                    &plugin.prepared,
                    &plugin.manifest.limits,
                    host,
                    capability,
                    input,
                )
                .await?;
            serde_json::from_str(&output).map_err(|err| CallError::InvalidOutput(err.to_string()))
        }
        .await;
        record.finish(outcome)
    }

    /// Runs a team's health-check plugin against `target`.
    pub async fn check(
        &self,
        team: &Name,
        name: &Name,
        target: &serde_json::Value,
        caller: Caller,
    ) -> Result<HealthReport, InvokeError> {
        let (plugin, mut host) = self.begin(team, name, caller)?;
        let record = CallRecord::new(&plugin, host.call_id, "check");
        let outcome = async {
            let _slot = slot(&plugin).await?;
            let limits = &plugin.manifest.limits;
            if plugin.manifest.permissions.reach_target
                && let Some(address) = TargetAddress::of(target)
            {
                let within = Duration::from_millis(limits.timeout_ms);
                host.reach = Some(Reach::resolve(address, within).await);
            }
            self.runtime
                .check(&plugin.prepared, limits, host, target.to_string())
                .await
        }
        .await;
        record.finish(outcome).map(HealthReport::from)
    }

    /// Runs a team's recovery-strategy plugin for `incident`.
    pub async fn recover(
        &self,
        team: &Name,
        name: &Name,
        incident: &Incident,
        caller: Caller,
    ) -> Result<RecoveryReport, InvokeError> {
        let (plugin, host) = self.begin(team, name, caller)?;
        let record = CallRecord::new(&plugin, host.call_id, "recover");
        let outcome = async {
            let _slot = slot(&plugin).await?;
            let limits = &plugin.manifest.limits;
            self.runtime
                .recover(&plugin.prepared, limits, host, incident.into())
                .await
        }
        .await;
        record.finish(outcome).map(RecoveryReport::from)
    }

    /// Starts a call of a loaded plugin: the plugin and the call's host
    /// context. Every kind of call goes through here, then counts and logs
    /// how it ended with a [`CallRecord`].
    fn begin(
        &self,
        team: &Name,
        name: &Name,
        caller: Caller,
    ) -> Result<(Arc<LoadedPlugin>, HostContext), InvokeError> {
        let plugin = self
            .serving(&(team.as_str(), name.as_str()))
            .ok_or_else(|| InvokeError::NotFound {
                team: team.to_string(),
                name: name.to_string(),
            })?;
        let host = self.host_context(&plugin.manifest, plugin.share.clone(), caller);
        Ok((plugin, host))
    }

    /// What the host offers one call of a plugin with `manifest`, under a
    /// new call id. Also used for the `describe` call at load.
    pub(super) fn host_context(
        &self,
        manifest: &Arc<Manifest>,
        share: Arc<Semaphore>,
        caller: Caller,
    ) -> HostContext {
        let n = self.next_call.fetch_add(1, Ordering::Relaxed);
        HostContext {
            share,
            manifest: manifest.clone(),
            call_id: CallId(n),
            worker_id: caller.worker_id,
            subject_id: caller.subject_id,
            state: self.state.clone(),
            reach: None,
        }
    }

    /// The counters of `key`'s calls, made on first use.
    pub(super) fn stats_of(&self, key: &PluginKey) -> Arc<CallStats> {
        if let Some(stats) = self
            .stats
            .read()
            .expect("plugin registry poisoned")
            .get(key)
        {
            return stats.clone();
        }
        self.stats
            .write()
            .expect("plugin registry poisoned")
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// Totals over every plugin.
    pub fn totals(&self) -> PluginTotals {
        let stats = self.stats.read().expect("plugin registry poisoned");
        let sum = |f: fn(&CallStats) -> u64| stats.values().map(|s| f(s)).sum::<u64>();
        PluginTotals {
            loaded: self.loaded.read().expect("plugin registry poisoned").len() as u64,
            failed: self.failed.read().expect("plugin registry poisoned").len() as u64,
            calls: sum(CallStats::calls),
            failures: sum(CallStats::failures),
            call_seconds: sum(CallStats::micros) as f64 / 1e6,
        }
    }
}

/// Waits for one of the plugin's call slots, at most its time limit.
async fn slot(plugin: &LoadedPlugin) -> Result<tokio::sync::SemaphorePermit<'_>, CallError> {
    // Most calls find a free slot: take it without setting up a timer.
    if let Ok(permit) = plugin.slots.try_acquire() {
        return Ok(permit);
    }
    let limits = &plugin.manifest.limits;
    tokio::time::timeout(
        Duration::from_millis(limits.timeout_ms),
        plugin.slots.acquire(),
    )
    .await
    .map_err(|_| CallError::Busy(limits.max_concurrent_calls))?
    .map_err(|_| CallError::Host("plugin is shutting down".into()))
}

/// How one call is counted and, if it failed, logged.
struct CallRecord<'a> {
    stats: &'a CallStats,
    started: Instant,
    call_id: CallId,
    /// Whose call it is (team and name).
    manifest: &'a Manifest,
    /// The export called: a capability's name, `check` or `recover`.
    what: &'a str,
}

impl<'a> CallRecord<'a> {
    /// Starts the record of call `call_id` of `plugin`'s export `what`.
    fn new(plugin: &'a LoadedPlugin, call_id: CallId, what: &'a str) -> Self {
        Self {
            stats: &plugin.stats,
            started: Instant::now(),
            call_id,
            manifest: &plugin.manifest,
            what,
        }
    }

    /// Counts the call, logs it if it failed, and hands its outcome on.
    fn finish<T>(self, outcome: Result<T, CallError>) -> Result<T, InvokeError> {
        self.stats.count(self.started.elapsed(), outcome.is_err());
        if let Err(err) = &outcome {
            tracing::warn!(
                team = %self.manifest.team, plugin = %self.manifest.name, export = %self.what,
                call_id = %self.call_id, kind = %err.kind(), error = %err,
                "plugin call failed"
            );
        }
        outcome.map_err(InvokeError::Call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(stats: &'a CallStats, manifest: &'a Manifest) -> CallRecord<'a> {
        CallRecord {
            stats,
            started: Instant::now(),
            call_id: CallId(1),
            manifest,
            what: "open",
        }
    }

    fn manifest() -> Manifest {
        Manifest::parse(
            "name = \"tickets\"\nversion = \"1.0.0\"\nkind = \"capability\"\n\
             team = \"ops\"\ncapabilities = [\"open\"]\n",
        )
        .unwrap()
    }

    #[test]
    fn every_finished_call_is_counted_and_failures_also_as_failures() {
        let (stats, manifest) = (CallStats::default(), manifest());
        assert_eq!(record(&stats, &manifest).finish(Ok(7)).unwrap(), 7);
        assert_eq!((stats.calls(), stats.failures()), (1, 0));

        let failed = record(&stats, &manifest).finish::<()>(Err(CallError::Timeout(250)));
        assert!(matches!(
            failed,
            Err(InvokeError::Call(CallError::Timeout(250)))
        ));
        assert_eq!((stats.calls(), stats.failures()), (2, 1));
    }

    #[test]
    fn call_time_adds_up() {
        let stats = CallStats::default();
        stats.count(Duration::from_millis(3), false);
        stats.count(Duration::from_micros(1_500), true);
        assert_eq!(stats.micros(), 4_500);
        assert_eq!((stats.calls(), stats.failures()), (2, 1));
    }
}

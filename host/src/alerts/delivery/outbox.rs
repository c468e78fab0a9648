//! The outbox: queued deliveries in memory over their records, the
//! `alert-delivery` loop that sends what is due, and the outcome of each
//! send.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};

use super::channels::{SendError, Senders};
use super::config::DeliveryConfig;
use super::grouping::{self, groupable};
use super::records::{self, DeliveryPage, DeliveryQuery, DeliveryRecords};
use super::{
    AttemptStatus, ChannelKind, Delivery, DeliveryAttempt, DeliveryError, DeliveryStatus,
    MAX_RECORDED_ATTEMPTS, NO_RECIPIENT, Notice, NoticeEvent,
};
use crate::clock::Timestamp;
use crate::digest::{random_hex, sha256_hex};
use crate::engine::{
    Attempts, Backoff, Clock, DelayHistogram, Loops, Retry, Timers, next_attempt, run_timed,
    wait_until_idle,
};
use crate::store::{Op, Store, StoreError};

/// How long a queued id the core announced may be missing from the store
/// (its batch not yet written) before it is forgotten (the batch failed).
const ANNOUNCED_FOR: Duration = Duration::from_secs(60);

/// How often announced ids not yet in the store are looked for again.
const ANNOUNCED_POLL: Duration = Duration::from_millis(200);

/// Wait before writing an outcome again after the store refused it.
const REWRITE_AFTER: Duration = Duration::from_secs(1);

/// What [`Outbox::open`] needs.
pub struct OutboxDeps {
    /// Durable state.
    pub store: Store,
    /// The engine's clock.
    pub clock: Clock,
    /// The alerts file (or the default: nothing configured).
    pub config: DeliveryConfig,
    /// How long final deliveries are kept.
    pub retention: Duration,
}

/// Delivery counters of one channel.
#[derive(Default)]
pub struct ChannelMetrics {
    /// Attempts the receiver took.
    pub sent: AtomicU64,
    /// Attempts that failed.
    pub failed: AtomicU64,
}

/// What `/metrics` reads: attempts per channel and outcome, and the
/// event-to-delivery latency (from the notice's `raisedAt` to the
/// receiver's answer of the successful attempt).
pub struct DeliveryMetrics {
    channels: [ChannelMetrics; 4],
    /// Event-to-delivery latency of every channel.
    pub latency: DelayHistogram,
    channel_latency: [DelayHistogram; 4],
}

impl Default for DeliveryMetrics {
    fn default() -> Self {
        let histogram = || DelayHistogram::new(0.005, 16);
        Self {
            channels: Default::default(),
            latency: histogram(),
            channel_latency: [histogram(), histogram(), histogram(), histogram()],
        }
    }
}

fn slot(channel: ChannelKind) -> usize {
    match channel {
        ChannelKind::Email => 0,
        ChannelKind::Slack => 1,
        ChannelKind::Sms => 2,
        ChannelKind::PagerDuty => 3,
    }
}

impl DeliveryMetrics {
    /// The counters of one channel.
    pub fn channel(&self, channel: ChannelKind) -> &ChannelMetrics {
        &self.channels[slot(channel)]
    }

    /// The latency of one channel's successful deliveries.
    pub fn channel_latency(&self, channel: ChannelKind) -> &DelayHistogram {
        &self.channel_latency[slot(channel)]
    }

    fn record(&self, channel: ChannelKind, sent: bool, latency: Option<Duration>) {
        let counters = self.channel(channel);
        if sent {
            counters.sent.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(latency) = latency {
            self.latency.observe(latency);
            self.channel_latency(channel).observe(latency);
        }
    }
}

/// The body of `POST /alert-channels/test`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TestNotice {
    /// The recipient group, e.g. `Admin` or `Dev team`.
    pub group: String,
    /// The channels; all four when left out.
    #[serde(default)]
    pub channels: Option<Vec<ChannelKind>>,
    /// `critical` (the default; sent at once), `high` or `medium` (which
    /// wait for the grouping window).
    #[serde(default)]
    pub severity: Option<TestSeverity>,
}

/// The severity of a test notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TestSeverity {
    /// Sent at once.
    Critical,
    /// Waits for the grouping window.
    High,
    /// Waits for the grouping window.
    Medium,
}

impl TestSeverity {
    /// The word notices carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::High => "high",
            Self::Medium => "medium",
        }
    }
}

/// What `POST /alert-channels/test` queued.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestQueued {
    /// The test alert's id (`alert_test_…`); `GET
    /// /alert-deliveries?alertId=` lists its deliveries.
    pub alert_id: String,
    /// The deliveries' keys.
    pub keys: Vec<String>,
}

/// What the loop keeps in memory.
#[derive(Default)]
struct State {
    /// Deliveries waiting for a send, by id.
    waiting: HashMap<String, Delivery>,
    /// Their next tries.
    timers: Timers<String>,
    /// Ids the core queued (its batch may not be written yet), with when.
    announced: HashMap<String, Timestamp>,
    /// Sends in flight, by send id; the holder is the channel.
    in_flight: Attempts<String>,
    /// Delivery ids in flight, so that an announcement never adds one.
    sending: HashSet<String>,
}

/// The alert outbox; see the module documentation of `delivery`.
pub struct Outbox {
    records: DeliveryRecords,
    config: Arc<DeliveryConfig>,
    senders: Senders,
    clock: Clock,
    state: Mutex<State>,
    wake: Arc<Notify>,
    ended: Notify,
    limits: [Arc<Semaphore>; 4],
    metrics: DeliveryMetrics,
}

impl Outbox {
    /// Opens the table, puts every unfinished delivery back on its timer
    /// (one that was `sending` when the host stopped gets its attempt
    /// recorded `interrupted` and is due at once), and starts the
    /// `alert-delivery` and `alert-delivery-retention` loops.
    pub async fn open(deps: OutboxDeps, loops: &Loops) -> Result<Arc<Self>, StoreError> {
        let records = DeliveryRecords::open(&deps.store).await?;
        let concurrency = deps.config.policy.concurrency;
        let outbox = Arc::new(Self {
            records: records.clone(),
            senders: Senders::new(&deps.config),
            config: Arc::new(deps.config),
            clock: deps.clock,
            state: Mutex::new(State::default()),
            wake: Arc::new(Notify::new()),
            ended: Notify::new(),
            limits: std::array::from_fn(|_| Arc::new(Semaphore::new(concurrency))),
            metrics: DeliveryMetrics::default(),
        });
        let now = outbox.clock.now();
        let mut ops = Vec::new();
        let mut resumed = Vec::new();
        for delivery in records.load_unfinished().await? {
            let mut next = delivery.clone();
            if delivery.status == DeliveryStatus::Sending {
                next.status = DeliveryStatus::Pending;
                next.next_try = now;
                if let Some(last) = next.attempts.last_mut()
                    && last.attempt == next.attempts_made
                {
                    last.status = AttemptStatus::Interrupted;
                    last.error = Some("the host stopped during the send".into());
                }
                tracing::warn!(
                    alert_id = %next.notice.alert_id,
                    incident_id = %next.notice.incident_id.as_deref().unwrap_or("-"),
                    channel = %next.channel.as_str(),
                    delivery = %next.id,
                    "an alert delivery was being sent when the host stopped; sending it again"
                );
                ops.extend(records.put_ops(&delivery, &next));
            }
            resumed.push(next);
        }
        records.write(ops).await?;
        {
            let mut state = outbox.lock();
            for delivery in resumed {
                state.timers.set(delivery.next_try, delivery.id.clone());
                state.waiting.insert(delivery.id.clone(), delivery);
            }
            if !state.waiting.is_empty() {
                tracing::info!(
                    deliveries = state.waiting.len(),
                    "alert deliveries queued before the start resumed"
                );
            }
        }
        let (pruning, clock) = (records, outbox.clock);
        loops.spawn("alert-delivery-retention", move |shutdown| {
            records::prune_forever(pruning, clock, deps.retention, shutdown)
        });
        let looping = outbox.clone();
        loops.spawn("alert-delivery", move |shutdown| {
            let (clock, wake) = (looping.clock, looping.wake.clone());
            run_timed(clock, wake, shutdown, move || {
                let looping = looping.clone();
                async move { looping.pass().await }
            })
        });
        Ok(outbox)
    }

    /// The configuration in force.
    pub fn config(&self) -> &DeliveryConfig {
        &self.config
    }

    /// The counters and latencies for `/metrics`.
    pub fn metrics(&self) -> &DeliveryMetrics {
        &self.metrics
    }

    /// The store operations that queue `notice` to every address of each
    /// `(channel, group)` target: one [`Delivery`] per (channel, recipient),
    /// keyed `{notice.key}/{channel}/{recipient digest}`, inserted (a key
    /// already queued fails the whole batch with
    /// [`StoreError::AlreadyExists`]: the same notice is never queued
    /// twice). A channel that is not configured, an unknown group or a
    /// group without an address on the channel gives one `skipped` delivery
    /// that says why. Write the operations in the batch of the change
    /// they belong to, then call [`Outbox::wake`].
    ///
    /// High and medium notices are due after the grouping window, critical
    /// ones and PagerDuty events at once.
    pub fn enqueue_ops(&self, notice: &Notice, targets: &[(ChannelKind, String)]) -> Vec<Op> {
        let now = self.clock.now();
        let mut seen = HashSet::new();
        let mut ops = Vec::new();
        let mut queued = Vec::new();
        for (channel, group_name) in targets {
            let channel = *channel;
            let nothing_configured = ChannelKind::ALL
                .into_iter()
                .all(|c| !self.config.channels.is_configured(c));
            let addresses: Result<&[String], String> = if nothing_configured {
                Err(
                    "no alert channels are configured (start the host with --alerts-config FILE)"
                        .to_owned(),
                )
            } else if !self.config.channels.is_configured(channel) {
                Err(format!(
                    "the {} channel is not configured in {}",
                    channel.as_str(),
                    self.config.file.as_deref().unwrap_or("the alerts config")
                ))
            } else {
                match self.config.groups.get(group_name) {
                    None => Err(format!("no recipient group is named {group_name:?}")),
                    Some(group) if group.addresses(channel).is_empty() => Err(format!(
                        "group {group_name:?} has no {} address",
                        channel.as_str()
                    )),
                    Some(group) => Ok(group.addresses(channel)),
                }
            };
            let mut base = Delivery {
                id: String::new(),
                notice: notice.clone(),
                channel,
                group: group_name.clone(),
                recipient: NO_RECIPIENT.to_owned(),
                status: DeliveryStatus::Pending,
                queued_at: now,
                next_try: now,
                attempts_made: 0,
                attempts: Vec::new(),
                error: None,
                finished_at: None,
            };
            match addresses {
                Err(reason) => {
                    base.id = delivery_key(notice, channel, &format!("group:{group_name}"));
                    if !seen.insert(base.id.clone()) {
                        continue;
                    }
                    base.status = DeliveryStatus::Skipped;
                    base.error = Some(reason);
                    base.finished_at = Some(now);
                    ops.extend(self.records.insert_ops(&base));
                }
                Ok(addresses) => {
                    for address in addresses {
                        let mut delivery = base.clone();
                        delivery.id = delivery_key(notice, channel, address);
                        if !seen.insert(delivery.id.clone()) {
                            continue;
                        }
                        delivery.recipient = address.clone();
                        if groupable(&delivery) {
                            delivery.next_try = now.plus(self.config.policy.group_window);
                        }
                        ops.extend(self.records.insert_ops(&delivery));
                        queued.push(delivery.id);
                    }
                }
            }
        }
        let mut state = self.lock();
        for id in queued {
            state.announced.insert(id, now);
        }
        ops
    }

    /// Tells the loop that deliveries were written; call it after the
    /// batch with [`Outbox::enqueue_ops`]' operations returned.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Every delivery of an alert, recipients masked, in key order.
    pub async fn deliveries_of(&self, alert_id: &str) -> Result<Vec<Delivery>, StoreError> {
        Ok(self
            .records
            .of_alert(alert_id)
            .await?
            .into_iter()
            .map(Delivery::masked)
            .collect())
    }

    /// A page of deliveries (recipients masked); reads the store, so it
    /// runs on the blocking pool.
    pub async fn page(
        &self,
        query: DeliveryQuery,
        only_team: Option<String>,
    ) -> Result<DeliveryPage, StoreError> {
        let records = self.records.clone();
        tokio::task::spawn_blocking(move || records.page(&query, only_team.as_deref()))
            .await
            .map_err(|err| StoreError::Backend(format!("listing deliveries: {err}")))?
    }

    /// Queues a test notice to one group (`POST /alert-channels/test`),
    /// through the same path as alerts.
    pub async fn send_test(&self, test: TestNotice) -> Result<TestQueued, DeliveryError> {
        let invalid = |field: &str, message: String| DeliveryError::Invalid {
            field: field.to_owned(),
            message,
        };
        if !self.config.groups.contains_key(&test.group) {
            let known: Vec<&str> = self.config.groups.keys().map(String::as_str).collect();
            return Err(invalid(
                "group",
                format!("names no recipient group; there are {known:?}"),
            ));
        }
        let severity = test
            .severity
            .unwrap_or(TestSeverity::Critical)
            .as_str()
            .to_owned();
        let mut channels = test.channels.unwrap_or_else(|| ChannelKind::ALL.to_vec());
        channels.sort();
        channels.dedup();
        if channels.is_empty() {
            return Err(invalid("channels", "must name at least one channel".into()));
        }
        let alert_id = format!("alert_test_{}", random_hex(6));
        let notice = Notice {
            alert_id: alert_id.clone(),
            incident_id: None,
            team: crate::names::DEFAULT_TEAM.to_owned(),
            event: NoticeEvent::Trigger,
            severity,
            title: format!("Test alert {alert_id}"),
            body: format!(
                "A test of the alert channels of group {:?}, queued by POST /alert-channels/test.",
                test.group
            ),
            link: None,
            source: "autoagent:test".to_owned(),
            raised_at: self.clock.now(),
            key: format!("{alert_id}/trigger/0"),
        };
        let targets: Vec<(ChannelKind, String)> = channels
            .into_iter()
            .map(|channel| (channel, test.group.clone()))
            .collect();
        let ops = self.enqueue_ops(&notice, &targets);
        let keys = ops
            .iter()
            .filter_map(|op| match op {
                Op::Insert { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect();
        self.records.write(ops).await?;
        self.wake();
        Ok(TestQueued { alert_id, keys })
    }

    /// Waits up to `grace` for the sends in flight, then aborts the rest:
    /// they stay `sending` in the store and are sent again after the next
    /// start.
    pub async fn drain(&self, grace: Duration) {
        let left = wait_until_idle(grace, &self.ended, || self.lock().in_flight.len()).await;
        if left > 0 {
            tracing::warn!(
                sends = left,
                "alert sends still in flight at shutdown were stopped; they are sent again after the next start"
            );
            self.lock().in_flight.abort_all();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change under the lock is a few map operations that cannot
        // panic half-way.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One pass of the loop: takes in what the core queued, starts the
    /// sends that are due, and says when the next is.
    async fn pass(self: &Arc<Self>) -> Option<Timestamp> {
        let now = self.clock.now();
        self.take_in_announced(now).await;
        let mut state = self.lock();
        let due = state.timers.take_due(now);
        let sends = grouping::form_sends(&due, &state.waiting, self.config.policy.group_window);
        for ids in sends {
            let members: Vec<Delivery> = ids
                .iter()
                .filter_map(|id| state.waiting.remove(id))
                .collect();
            for member in &members {
                // A member pulled in before its own time still has a timer.
                state.timers.cancel(member.next_try, &member.id);
                state.sending.insert(member.id.clone());
            }
            let Some(first) = members.first() else {
                continue;
            };
            let channel = first.channel;
            let send_id = format!("send_{}", random_hex(8));
            state.in_flight.claim(send_id.clone(), 1, channel.as_str());
            let outbox = self.clone();
            let id = send_id.clone();
            let call = tokio::spawn(async move { outbox.send(id, members).await });
            state.in_flight.attach(&send_id, 1, call.abort_handle());
        }
        let mut next = state.timers.next();
        if !state.announced.is_empty() {
            let poll = now.plus(ANNOUNCED_POLL);
            next = Some(next.map_or(poll, |at| at.min(poll)));
        }
        next
    }

    /// Reads the deliveries the core announced and puts those written on
    /// their timers; ids not in the store yet are looked for again, for a
    /// while.
    async fn take_in_announced(&self, now: Timestamp) {
        let announced: Vec<(String, Timestamp)> = {
            let state = self.lock();
            state
                .announced
                .iter()
                .map(|(id, at)| (id.clone(), *at))
                .collect()
        };
        if announced.is_empty() {
            return;
        }
        let records = self.records.clone();
        let ids: Vec<String> = announced.iter().map(|(id, _)| id.clone()).collect();
        let read = tokio::task::spawn_blocking(move || {
            ids.into_iter()
                .map(|id| {
                    let found = records.get(&id);
                    (id, found)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let Ok(read) = read else {
            return;
        };
        let mut state = self.lock();
        for ((id, found), (_, since)) in read.into_iter().zip(announced) {
            match found {
                Ok(Some(delivery)) => {
                    state.announced.remove(&id);
                    let known = state.waiting.contains_key(&id) || state.sending.contains(&id);
                    if delivery.status == DeliveryStatus::Pending && !known {
                        state.timers.set(delivery.next_try, id.clone());
                        state.waiting.insert(id, delivery);
                    }
                }
                Ok(None) if now.since(since) < ANNOUNCED_FOR => {}
                Ok(None) => {
                    state.announced.remove(&id);
                }
                Err(err) => {
                    tracing::warn!(delivery = %id, error = %err, "cannot read a queued alert delivery; trying again");
                }
            }
        }
    }

    /// One send: `members` (one delivery, or several grouped for one
    /// recipient) as one message. Writes them `sending`, sends under the
    /// channel's limit and time limit, writes the outcome, and puts what is
    /// retried back on its timer.
    async fn send(self: Arc<Self>, send_id: String, members: Vec<Delivery>) {
        let channel = members[0].channel;
        let recipient = members[0].recipient.clone();
        let _permit = self.limits[slot(channel)]
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let started_at = self.clock.now();
        let grouped = members.len() as u32;
        let sending: Vec<Delivery> = members
            .iter()
            .map(|old| {
                let mut new = old.clone();
                new.status = DeliveryStatus::Sending;
                new.attempts_made += 1;
                new.attempts.push(DeliveryAttempt {
                    attempt: new.attempts_made,
                    at: started_at,
                    // Shown as under way; a restart that finds it still
                    // so records it `interrupted`.
                    status: AttemptStatus::Sending,
                    error: None,
                    http_status: None,
                    latency_ms: 0,
                    send_id: send_id.clone(),
                    grouped,
                });
                trim_attempts(&mut new.attempts);
                new
            })
            .collect();
        let ops = members
            .iter()
            .zip(&sending)
            .flat_map(|(old, new)| self.records.put_ops(old, new))
            .collect();
        if let Err(err) = self.records.write(ops).await {
            tracing::warn!(error = %err, channel = %channel.as_str(), "cannot record an alert send before it starts; trying later");
            let retry_at = self.clock.now().plus(REWRITE_AFTER);
            let ids: Vec<String> = members.iter().map(|d| d.id.clone()).collect();
            self.settle(&send_id, &ids, members, Some(retry_at));
            return;
        }
        let mut key_parts: Vec<&str> = sending.iter().map(|d| d.id.as_str()).collect();
        key_parts.sort_unstable();
        let message_key = key_parts.join("\n");
        let started = Instant::now();
        let limit = self.config.timeout_of(channel) + Duration::from_millis(500);
        let result = match tokio::time::timeout(
            limit,
            self.senders
                .send(&self.config, channel, &recipient, &sending, &message_key),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(SendError {
                error: format!("timed out after {} ms", limit.as_millis()),
                http_status: None,
                retryable: true,
                retry_after: None,
            }),
        };
        let took = started.elapsed();
        let now = self.clock.now();
        let policy = &self.config.policy;
        let backoff = Backoff {
            base: policy.backoff,
            max: policy.max_backoff,
        };
        let mut finished = Vec::with_capacity(sending.len());
        for old in &sending {
            let mut new = old.clone();
            let attempt = new.attempts.last_mut().expect("the attempt was just added");
            attempt.latency_ms = took.as_millis() as u64;
            let notice = &new.notice;
            match &result {
                Ok(status) => {
                    attempt.status = AttemptStatus::Sent;
                    attempt.http_status = *status;
                    new.status = DeliveryStatus::Sent;
                    new.error = None;
                    new.finished_at = Some(now);
                    let latency = now.since(notice.raised_at);
                    self.metrics.record(channel, true, Some(latency));
                    tracing::info!(
                        alert_id = %notice.alert_id,
                        incident_id = %notice.incident_id.as_deref().unwrap_or("-"),
                        channel = %channel.as_str(),
                        delivery = %new.id,
                        send = %send_id,
                        grouped,
                        latency_ms = latency.as_millis() as u64,
                        "alert delivered"
                    );
                }
                Err(failure) => {
                    attempt.status = AttemptStatus::Failed;
                    attempt.error = Some(failure.error.clone());
                    attempt.http_status = failure.http_status;
                    new.error = Some(failure.error.clone());
                    self.metrics.record(channel, false, None);
                    match next_attempt(
                        &backoff,
                        new.attempts_made,
                        policy.max_attempts,
                        failure.retryable,
                    ) {
                        Retry::After(wait) => {
                            let wait = wait.max(failure.retry_after.unwrap_or_default());
                            new.status = DeliveryStatus::Pending;
                            new.next_try = now.plus(wait);
                            tracing::warn!(
                                alert_id = %notice.alert_id,
                                incident_id = %notice.incident_id.as_deref().unwrap_or("-"),
                                channel = %channel.as_str(),
                                delivery = %new.id,
                                attempt = new.attempts_made,
                                error = %failure.error,
                                retry_in_ms = wait.as_millis() as u64,
                                "alert delivery attempt failed; retrying"
                            );
                        }
                        Retry::GiveUp => {
                            new.status = DeliveryStatus::Failed;
                            new.finished_at = Some(now);
                            tracing::error!(
                                alert_id = %notice.alert_id,
                                incident_id = %notice.incident_id.as_deref().unwrap_or("-"),
                                channel = %channel.as_str(),
                                delivery = %new.id,
                                attempts = new.attempts_made,
                                error = %failure.error,
                                "alert delivery failed; giving up"
                            );
                        }
                    }
                }
            }
            finished.push(new);
        }
        let ops: Vec<Op> = sending
            .iter()
            .zip(&finished)
            .flat_map(|(old, new)| self.records.put_ops(old, new))
            .collect();
        // The outcome must be written, or a sent message would be sent
        // again: try until the store takes it (a fault episode ends by
        // itself) or shutdown aborts this send.
        while let Err(err) = self.records.write(ops.clone()).await {
            tracing::warn!(error = %err, channel = %channel.as_str(), "cannot record an alert send's outcome; trying again");
            tokio::time::sleep(REWRITE_AFTER).await;
        }
        let ids: Vec<String> = finished.iter().map(|d| d.id.clone()).collect();
        let waiting: Vec<Delivery> = finished
            .into_iter()
            .filter(|d| d.status == DeliveryStatus::Pending)
            .collect();
        self.settle(&send_id, &ids, waiting, None);
    }

    /// Ends a send: its pending deliveries go back on their timers (at
    /// `retry_at` at the earliest, when given), the others are done.
    fn settle(
        &self,
        send_id: &str,
        members: &[String],
        waiting: Vec<Delivery>,
        retry_at: Option<Timestamp>,
    ) {
        {
            let mut state = self.lock();
            state.in_flight.finish(&send_id.to_owned(), 1);
            for id in members {
                state.sending.remove(id);
            }
            for mut delivery in waiting {
                if let Some(at) = retry_at {
                    delivery.next_try = delivery.next_try.max(at);
                }
                state.timers.set(delivery.next_try, delivery.id.clone());
                state.waiting.insert(delivery.id.clone(), delivery);
            }
        }
        self.ended.notify_waiters();
        self.wake.notify_one();
    }
}

/// The idempotency key of one delivery.
fn delivery_key(notice: &Notice, channel: ChannelKind, recipient: &str) -> String {
    let digest = sha256_hex(recipient.as_bytes());
    format!("{}/{}/{}", notice.key, channel.as_str(), &digest[..16])
}

fn trim_attempts(attempts: &mut Vec<DeliveryAttempt>) {
    if attempts.len() > MAX_RECORDED_ATTEMPTS {
        let extra = attempts.len() - MAX_RECORDED_ATTEMPTS;
        attempts.drain(..extra);
    }
}

//! The local scheduler: runs the cached config's schedules on the shared
//! cron module (`rm_cron`), in each schedule's time zone, whether or not the
//! control plane is reachable.
//!
//! For each schedule it remembers the last slot it fired (persisted in
//! `schedules.json`). On every tick it looks at the latest slot at or before
//! now: a later slot than the one fired means a run is due — once, however
//! many slots were missed while the machine slept or was off. A schedule
//! seen for the first time (or whose cron or time zone changed) waits for
//! its next slot. Jitter delays the run, durably (the job is accepted at
//! once with a not-before time).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use rand::Rng;
use rm_bus::JobId;
use rm_bus::clock::SharedClock;
use rm_bus::msg::{AgentConfig, JobOrigin, JobSpec, NextRun, ScheduleSpec};
use rm_cron::CronSchedule;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::exec::{Accepted, Executor};
use crate::state::StateDir;

const FIRED_FILE: &str = "schedules.json";

/// What was last fired for one schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Fired {
    slot_ms: i64,
    cron: String,
    timezone: String,
}

/// A run that is due now.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub schedule: ScheduleSpec,
    pub slot_ms: i64,
}

pub struct Scheduler {
    state: StateDir,
    clock: SharedClock,
    config: Mutex<Option<AgentConfig>>,
    fired: Mutex<BTreeMap<String, Fired>>,
    wake: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Scheduler {
    pub fn new(state: StateDir, clock: SharedClock, config: Option<AgentConfig>) -> Result<Self> {
        let fired = state.read_json(FIRED_FILE)?.unwrap_or_default();
        Ok(Self {
            state,
            clock,
            config: Mutex::new(config),
            fired: Mutex::new(fired),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Replaces the schedules (a newer config arrived).
    pub fn set_config(&self, config: AgentConfig) {
        *lock(&self.config) = Some(config);
        self.wake.notify_one();
    }

    fn schedules(&self) -> Vec<ScheduleSpec> {
        lock(&self.config)
            .as_ref()
            .map(|c| c.schedules.clone())
            .unwrap_or_default()
    }

    /// The next run of every enabled schedule, for heartbeats.
    pub fn next_runs(&self) -> Vec<NextRun> {
        let now = self.clock.now_ms();
        self.schedules()
            .into_iter()
            .filter(|s| s.enabled)
            .filter_map(|s| {
                let cron = CronSchedule::parse(&s.cron, &s.timezone).ok()?;
                Some(NextRun {
                    at_ms: cron.next_after_ms(now)?,
                    schedule_id: s.schedule_id,
                })
            })
            .collect()
    }

    /// The runs due at `now`. First sightings (a new or changed schedule)
    /// are recorded at once; due runs are recorded by [`Self::mark_fired`]
    /// only after their job is in the journal, so a crash in between fires
    /// the slot again — with the same job id, which the journal knows, so
    /// it runs once.
    pub fn due(&self, now_ms: i64) -> Result<Vec<Due>> {
        let schedules = self.schedules();
        let mut fired = lock(&self.fired);
        let before = fired.clone();
        let mut due = Vec::new();
        for s in &schedules {
            if !s.enabled {
                continue;
            }
            let cron = match CronSchedule::parse(&s.cron, &s.timezone) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(schedule = %s.schedule_id, error = %e, "schedule skipped");
                    continue;
                }
            };
            let Some(slot) = cron.last_at_or_before_ms(now_ms) else {
                continue;
            };
            match fired.get(&s.schedule_id) {
                Some(f) if f.cron == s.cron && f.timezone == s.timezone => {
                    if slot > f.slot_ms {
                        due.push(Due {
                            schedule: s.clone(),
                            slot_ms: slot,
                        });
                    }
                }
                // New or changed: wait for the next slot.
                _ => {
                    fired.insert(s.schedule_id.clone(), fired_mark(s, slot));
                }
            }
        }
        fired.retain(|id, _| schedules.iter().any(|s| &s.schedule_id == id));
        if *fired != before {
            self.state.write_json(FIRED_FILE, &*fired)?;
        }
        Ok(due)
    }

    /// Records a due run as fired (its job is in the journal).
    pub fn mark_fired(&self, d: &Due) -> Result<()> {
        let mut fired = lock(&self.fired);
        fired.insert(
            d.schedule.schedule_id.clone(),
            fired_mark(&d.schedule, d.slot_ms),
        );
        self.state.write_json(FIRED_FILE, &*fired)
    }

    /// [`Self::due`] and [`Self::mark_fired`] at once.
    pub fn take_due(&self, now_ms: i64) -> Result<Vec<Due>> {
        let due = self.due(now_ms)?;
        for d in &due {
            self.mark_fired(d)?;
        }
        Ok(due)
    }

    /// Fires due runs every `every` (and when the config changes) until
    /// `stop`.
    pub async fn run(
        self: Arc<Self>,
        exec: Arc<Executor>,
        every: Duration,
        stop: CancellationToken,
    ) {
        loop {
            match self.due(self.clock.now_ms()) {
                Ok(due) => {
                    for d in due {
                        if self.fire(&exec, &d)
                            && let Err(e) = self.mark_fired(&d)
                        {
                            tracing::error!(error = %e, "scheduler could not record a fired run");
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "scheduler could not read its schedules"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// Hands a due run to the executor; `true` when the slot is taken care
    /// of (accepted now or earlier), `false` to try it again next tick.
    fn fire(&self, exec: &Arc<Executor>, d: &Due) -> bool {
        let run = plan(d, self.clock.now_ms(), &mut rand::thread_rng());
        let job = run.spec.job_id.clone();
        let id = &d.schedule.schedule_id;
        match exec.accept_at(run.spec, run.origin, run.not_before_ms) {
            Accepted::New => {
                tracing::info!(schedule = %id, job = %job, slot_ms = d.slot_ms, not_before_ms = ?run.not_before_ms, "scheduled run");
                true
            }
            Accepted::Duplicate => true,
            Accepted::Refused(why) => {
                tracing::warn!(schedule = %id, reason = %why, "scheduled run not accepted; trying again");
                false
            }
        }
    }
}

fn fired_mark(s: &ScheduleSpec, slot_ms: i64) -> Fired {
    Fired {
        slot_ms,
        cron: s.cron.clone(),
        timezone: s.timezone.clone(),
    }
}

/// The job id of one slot of one schedule: the same every time the slot
/// is planned, so a slot fired again after a crash is recognised.
fn slot_job_id(schedule_id: &str, slot_ms: i64) -> JobId {
    JobId::parse(format!("{schedule_id}-{slot_ms}")).unwrap_or_else(|_| JobId::generate())
}

/// A due run as the job it becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub spec: JobSpec,
    pub origin: JobOrigin,
    /// With jitter: a random time within `jitter_secs` after `now_ms`.
    pub not_before_ms: Option<i64>,
}

/// Turns a due run into its job (the slot's id), delayed by a random part
/// of the schedule's jitter.
pub fn plan(d: &Due, now_ms: i64, rng: &mut impl Rng) -> Planned {
    let s = &d.schedule;
    let not_before_ms = (s.jitter_secs > 0).then(|| {
        let jitter = rng.gen_range(0..=s.jitter_secs.saturating_mul(1000));
        now_ms.saturating_add(i64::try_from(jitter).unwrap_or(i64::MAX))
    });
    Planned {
        spec: JobSpec {
            job_id: slot_job_id(&s.schedule_id, d.slot_ms),
            params: s.params.clone(),
            repo: s.repo.clone(),
            timeout_secs: s.timeout_secs,
        },
        origin: JobOrigin::Schedule {
            schedule_id: s.schedule_id.clone(),
        },
        not_before_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rm_bus::clock::ManualClock;
    use rm_bus::msg::{JobParams, RepoAccess, Sealed};

    const H: i64 = 3_600_000;
    // 2026-01-01T00:00:00Z
    const T0: i64 = 1_767_225_600_000;

    fn sched(id: &str, cron: &str, tz: &str) -> ScheduleSpec {
        ScheduleSpec {
            schedule_id: id.into(),
            cron: cron.into(),
            timezone: tz.into(),
            enabled: true,
            jitter_secs: 0,
            params: JobParams::Prune {},
            repo: RepoAccess {
                repo_id: "r".into(),
                secrets: Sealed("x".into()),
                append_only: false,
            },
            timeout_secs: 60,
        }
    }

    fn config(s: Vec<ScheduleSpec>) -> AgentConfig {
        AgentConfig {
            version: 1,
            heartbeat_secs: None,
            schedules: s,
        }
    }

    fn slots(d: &[Due]) -> Vec<(String, i64)> {
        d.iter()
            .map(|d| (d.schedule.schedule_id.clone(), d.slot_ms))
            .collect()
    }

    #[test]
    fn fires_each_slot_once_and_missed_slots_once() {
        let tmp = tempfile::tempdir().unwrap();
        let st = StateDir::open(tmp.path()).unwrap();
        let clock = ManualClock::new(T0 + 10 * 60_000);
        let s = Scheduler::new(
            st.clone(),
            clock.clone(),
            Some(config(vec![sched("hourly", "0 * * * *", "UTC")])),
        )
        .unwrap();
        // first sight: nothing from the past
        assert!(s.take_due(T0 + 10 * 60_000).unwrap().is_empty());
        assert!(s.take_due(T0 + 59 * 60_000).unwrap().is_empty());
        assert_eq!(
            slots(&s.take_due(T0 + H + 1000).unwrap()),
            [("hourly".into(), T0 + H)]
        );
        assert!(s.take_due(T0 + H + 5000).unwrap().is_empty());
        // asleep for five hours: one run on wake
        assert_eq!(
            slots(&s.take_due(T0 + 6 * H + 30_000).unwrap()),
            [("hourly".into(), T0 + 6 * H)]
        );
        // survives a restart of the agent
        let s2 = Scheduler::new(
            st,
            clock,
            Some(config(vec![sched("hourly", "0 * * * *", "UTC")])),
        )
        .unwrap();
        assert!(s2.take_due(T0 + 6 * H + 60_000).unwrap().is_empty());
        assert_eq!(
            slots(&s2.take_due(T0 + 7 * H).unwrap()),
            [("hourly".into(), T0 + 7 * H)]
        );
    }

    #[test]
    fn a_run_not_marked_fired_is_due_again_after_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let st = StateDir::open(tmp.path()).unwrap();
        let clock = ManualClock::new(T0);
        let cfg = || Some(config(vec![sched("h", "0 * * * *", "UTC")]));
        let s = Scheduler::new(st.clone(), clock.clone(), cfg()).unwrap();
        assert!(s.due(T0).unwrap().is_empty());
        let d = s.due(T0 + H).unwrap();
        assert_eq!(slots(&d), [("h".into(), T0 + H)]);
        // the agent dies before the job reached the journal
        drop(s);
        let s = Scheduler::new(st.clone(), clock.clone(), cfg()).unwrap();
        let again = s.due(T0 + H + 10).unwrap();
        assert_eq!(slots(&again), [("h".into(), T0 + H)], "not lost");
        s.mark_fired(&again[0]).unwrap();
        let s = Scheduler::new(st, clock, cfg()).unwrap();
        assert!(
            s.due(T0 + H + 20).unwrap().is_empty(),
            "and once marked, done"
        );
    }

    #[test]
    fn time_zone_edits_and_disabled() {
        let tmp = tempfile::tempdir().unwrap();
        let st = StateDir::open(tmp.path()).unwrap();
        let clock = ManualClock::new(T0);
        // 02:00 in Berlin (UTC+1 in January) is 01:00 UTC
        let s = Scheduler::new(
            st,
            clock,
            Some(config(vec![sched("b", "0 2 * * *", "Europe/Berlin")])),
        )
        .unwrap();
        assert!(s.take_due(T0).unwrap().is_empty());
        assert!(s.take_due(T0 + H - 1).unwrap().is_empty());
        assert_eq!(slots(&s.take_due(T0 + H).unwrap()), [("b".into(), T0 + H)]);
        // an edit to the expression waits for the new expression's next slot
        s.set_config(config(vec![sched("b", "0 3 * * *", "Europe/Berlin")]));
        assert!(s.take_due(T0 + 3 * H).unwrap().is_empty());
        assert_eq!(
            slots(&s.take_due(T0 + 26 * H).unwrap()),
            [("b".into(), T0 + 26 * H)]
        );
        let mut off = sched("b", "0 3 * * *", "Europe/Berlin");
        off.enabled = false;
        s.set_config(config(vec![off]));
        assert!(s.take_due(T0 + 60 * H).unwrap().is_empty());
        assert!(s.next_runs().is_empty());
    }

    #[test]
    fn jitter_delays_within_its_bound_and_varies() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut s = sched("j", "0 * * * *", "UTC");
        let due = |s: &ScheduleSpec| Due {
            schedule: s.clone(),
            slot_ms: T0,
        };
        let p = plan(&due(&s), T0 + 5, &mut rng);
        assert_eq!(p.not_before_ms, None, "no jitter: no delay");
        assert_eq!(
            p.origin,
            JobOrigin::Schedule {
                schedule_id: "j".into()
            }
        );
        assert_eq!(p.spec.params, s.params);
        s.jitter_secs = 30;
        let delays: std::collections::HashSet<i64> = (0..100)
            .map(|_| plan(&due(&s), T0 + 5, &mut rng).not_before_ms.unwrap() - (T0 + 5))
            .collect();
        assert!(
            delays.iter().all(|d| (0..=30_000).contains(d)),
            "{delays:?}"
        );
        assert!(delays.len() > 50, "jitter varies");
        let a = plan(&due(&s), T0, &mut rng);
        let b = plan(&due(&s), T0 + 9, &mut rng);
        assert_eq!(a.spec.job_id, b.spec.job_id, "one slot, one job");
        assert_eq!(a.spec.job_id.as_str(), format!("j-{T0}"));
        let next = Due {
            schedule: s.clone(),
            slot_ms: T0 + H,
        };
        assert_ne!(plan(&next, T0, &mut rng).spec.job_id, a.spec.job_id);
    }

    #[test]
    fn next_runs_in_the_schedule_time_zone() {
        let tmp = tempfile::tempdir().unwrap();
        let st = StateDir::open(tmp.path()).unwrap();
        let clock = ManualClock::new(T0);
        let s = Scheduler::new(
            st,
            clock,
            Some(config(vec![sched("b", "30 2 * * *", "Europe/Berlin")])),
        )
        .unwrap();
        let n = s.next_runs();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].at_ms, T0 + H + 30 * 60_000);
    }
}

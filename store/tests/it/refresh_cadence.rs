//! The periodic refresh's cadence (`rm_store::refresh::due`): once a
//! period per repository, each at its own place in the period, so a fleet
//! whose repositories were added and refreshed together is not refreshed
//! all at once again every period (issue 14, stop 63).

use std::collections::HashMap;

use rm_store::refresh::{self, phase_of};

use super::*;

/// The period of these tests (an hour, in ms) and the sweep's step.
const P: i64 = 3_600_000;
const STEP: i64 = P / 100;

/// `n` repositories `r0000…`, created at 0, each attached to one online
/// host.
async fn fleet(n: usize) -> (Store, tempfile::TempDir, Vec<String>) {
    let (s, d) = store().await;
    let mut tx = s.write().await.unwrap();
    hosts::insert(&mut tx, "h", "h", "alice", 0).await.unwrap();
    sqlx::query("UPDATE hosts SET status = 'online' WHERE id = 'h'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("r{i:04}");
        add_repo(&mut tx, &id).await;
        repos::attach(&mut tx, "h", &id, Access::AppendOnly, b"a", 0)
            .await
            .unwrap();
        ids.push(id);
    }
    tx.commit().await.unwrap();
    (s, d, ids)
}

/// The sweep at `now`: queues every due repository (no limit), as the
/// control plane's sweep marks them. Returns them.
async fn sweep(s: &Store, now: i64) -> Vec<String> {
    let due = {
        let mut c = s.read().await.unwrap();
        refresh::due(&mut c, now, P, 100_000).await.unwrap()
    };
    let mut tx = s.write().await.unwrap();
    for r in &due {
        refresh::mark_queued(&mut tx, r, now).await.unwrap();
    }
    tx.commit().await.unwrap();
    due
}

async fn due_at(s: &Store, now: i64) -> Vec<String> {
    let mut c = s.read().await.unwrap();
    refresh::due(&mut c, now, P, 100_000).await.unwrap()
}

#[tokio::test]
async fn a_fleet_refreshed_together_is_refreshed_spread_over_the_next_periods_each_repository_once_a_period()
 {
    let (s, _d, ids) = fleet(1_000).await;
    // the whole fleet refreshed at once (an upgrade's first sweep, or a
    // fleet added in one go)
    let mut tx = s.write().await.unwrap();
    for r in &ids {
        refresh::mark_queued(&mut tx, r, 0).await.unwrap();
    }
    tx.commit().await.unwrap();

    let mut at: HashMap<String, Vec<i64>> = HashMap::new();
    let mut busiest = 0;
    let mut now = STEP;
    while now < 4 * P {
        let due = sweep(&s, now).await;
        busiest = busiest.max(due.len());
        for r in due {
            at.entry(r).or_default().push(now);
        }
        now += STEP;
    }
    // every repository refreshed at its first slot half a period or more
    // after the fleet's refresh
    for r in &ids {
        let first = at[r][0];
        assert!(
            (P / 2..=3 * P / 2).contains(&first),
            "{r}: first at {first}"
        );
    }
    // from then on, once a period: exactly once in each period-long window
    for w in [2 * P, 2 * P + 33 * STEP, 3 * P - STEP] {
        for r in &ids {
            let n = at[r].iter().filter(|t| (w..w + P).contains(*t)).count();
            assert_eq!(n, 1, "{r}: refreshes in [{w}, {}): {:?}", w + P, at[r]);
        }
    }
    // a period apart
    for (r, times) in &at {
        for pair in times.windows(2) {
            assert_eq!(pair[1] - pair[0], P, "{r}: {times:?}");
        }
    }
    // spread over the period: each tenth of it takes about a tenth of the
    // fleet (the old rule, a period after the last, refreshed all 1,000 in
    // one sweep, every period)
    let mut tenths = [0usize; 10];
    for times in at.values() {
        for t in times.iter().filter(|t| (2 * P..3 * P).contains(*t)) {
            tenths[usize::try_from((t - 2 * P) * 10 / P).unwrap()] += 1;
        }
    }
    assert!(
        tenths.iter().all(|n| (70..=130).contains(n)),
        "refreshes per tenth of the period: {tenths:?}"
    );
    // no sweep takes more than a few tenths of a period's share (1,000 in
    // 100 sweeps: 10 on average)
    assert!(busiest <= 30, "{busiest} repositories due in one sweep");
}

#[tokio::test]
async fn a_refresh_out_of_turn_less_than_half_a_period_before_a_slot_skips_that_slot_and_not_the_next()
 {
    let (s, _d, ids) = fleet(1).await;
    let r = &ids[0];
    let slot = P + phase_of(r) * P / (1 << 20);
    // refreshed at its slot in the first period
    let mut tx = s.write().await.unwrap();
    refresh::mark_queued(&mut tx, r, slot - P).await.unwrap();
    tx.commit().await.unwrap();
    assert!(due_at(&s, slot - 1).await.is_empty(), "before its slot");
    // an operator's refresh just before the slot: the slot is skipped
    let op = slot - P / 10;
    let mut tx = s.write().await.unwrap();
    refresh::mark_queued(&mut tx, r, op).await.unwrap();
    tx.commit().await.unwrap();
    assert!(
        due_at(&s, slot).await.is_empty(),
        "due right after the operator's"
    );
    assert!(due_at(&s, slot + P - 1).await.is_empty());
    assert_eq!(sweep(&s, slot + P).await, ids, "at its next slot");
    // one just after a slot (a prune's): the next slot is kept
    let prune = slot + P + P / 10;
    let mut tx = s.write().await.unwrap();
    refresh::mark_queued(&mut tx, r, prune).await.unwrap();
    tx.commit().await.unwrap();
    assert!(due_at(&s, slot + 2 * P - 1).await.is_empty());
    assert_eq!(due_at(&s, slot + 2 * P).await, ids, "at the slot after");
}

#[tokio::test]
async fn a_repository_never_refreshed_falls_due_at_its_first_slot_half_a_period_or_more_after_its_creation()
 {
    let (s, _d, ids) = fleet(20).await;
    // created at 0: due at its slot in the first period, or in the second
    // if that came less than half a period after its creation
    let first = |r: &str| {
        let phase_ms = phase_of(r) * P / (1 << 20);
        if phase_ms >= P / 2 {
            phase_ms
        } else {
            P + phase_ms
        }
    };
    assert!(
        ids.iter().any(|r| first(r) < P),
        "no slot in the first period"
    );
    assert!(ids.iter().any(|r| first(r) > P), "no slot in the second");
    for r in &ids {
        let t = first(r);
        assert!(!due_at(&s, t - 1).await.contains(r), "{r} due before {t}");
        assert!(due_at(&s, t).await.contains(r), "{r} not due at {t}");
    }
    // long overdue (never refreshed, hosts back after a week): due at once
    assert_eq!(due_at(&s, 7 * 24 * P + 1).await.len(), ids.len());
}

/// The pages say when a repository's next periodic refresh falls
/// (`Cadence::next_due`, in Rust): it must be exactly when the sweep's
/// statement first finds it due.
#[tokio::test]
async fn next_due_is_the_moment_the_sweep_first_finds_a_repository_due() {
    let (s, _d, ids) = fleet(200).await;
    // last refreshes all over three periods, some never (from creation, 0)
    let mut tx = s.write().await.unwrap();
    for (i, r) in ids.iter().enumerate() {
        if i % 5 != 0 {
            let last = i64::try_from(i).unwrap() * 7_919_000 % (3 * P);
            refresh::mark_queued(&mut tx, r, last).await.unwrap();
        }
    }
    tx.commit().await.unwrap();
    for r in &ids {
        let c = {
            let mut c = s.read().await.unwrap();
            refresh::cadence(&mut c, r).await.unwrap()
        };
        let next = c.next_due(P);
        let last = c.queued_at.unwrap_or(c.created_at);
        assert!(
            (last + P / 2..last + 3 * P / 2).contains(&next),
            "{r}: {c:?} next {next}"
        );
        assert!(
            !due_at(&s, next - 1).await.contains(r),
            "{r} due before {next}"
        );
        assert!(due_at(&s, next).await.contains(r), "{r} not due at {next}");
    }
    let mut c = s.read().await.unwrap();
    assert!(matches!(
        refresh::cadence(&mut c, "nope").await,
        Err(StoreError::NotFound { .. })
    ));
}

#[tokio::test]
async fn the_control_planes_refresh_period_is_read_back_as_it_said_it() {
    let (s, _d) = store().await;
    let mut c = s.read().await.unwrap();
    assert_eq!(refresh::period(&mut c).await.unwrap(), None);
    drop(c);
    let mut tx = s.write().await.unwrap();
    refresh::publish_period(&mut tx, 6 * 3_600_000, 1)
        .await
        .unwrap();
    refresh::publish_period(&mut tx, 2 * 3_600_000, 2)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut c = s.read().await.unwrap();
    assert_eq!(refresh::period(&mut c).await.unwrap(), Some(2 * 3_600_000));
}

/// A stored phase is not recomputed, but a new build must give a new
/// repository the phase the benches' copy (`bench/capacity`) gives it.
#[test]
fn the_phase_of_an_id_is_the_same_in_every_build() {
    assert_eq!(phase_of("r0001"), 588_159);
}

#[test]
fn phases_of_ids_are_spread_over_the_period() {
    let mut tenths = [0usize; 10];
    for i in 0..10_000 {
        let p = phase_of(&format!("r{i:010}"));
        assert!((0..1 << 20).contains(&p));
        tenths[usize::try_from((p * 10) >> 20).unwrap()] += 1;
    }
    assert!(
        tenths.iter().all(|n| (800..=1_200).contains(n)),
        "{tenths:?}"
    );
}

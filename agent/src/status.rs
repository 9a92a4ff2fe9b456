//! `restic-manager-agent status`: what this endpoint's agent holds, read
//! from its state directory (works while the agent is stopped).

use std::fmt::Write;

use anyhow::Result;
use rm_bus::msg::AgentConfig;

use crate::journal::{JobState, Journal};
use crate::outbox::Outbox;
use crate::state::StateDir;

/// A human-readable report.
pub fn report(state: &StateDir) -> Result<String> {
    let mut out = String::new();
    if !state.is_enrolled() {
        writeln!(
            out,
            "not enrolled (state directory {})",
            state.root().display()
        )?;
        return Ok(out);
    }
    let id = state.identity()?;
    writeln!(out, "host id:        {}", id.host_id)?;
    writeln!(out, "server:         {}", id.server_url)?;
    writeln!(out, "bus:            {}", id.bus_urls.join(", "))?;
    writeln!(out, "state dir:      {}", state.root().display())?;
    let config: Option<AgentConfig> = state.read_json("config.json")?;
    match config {
        Some(c) => {
            writeln!(out, "config version: {}", c.version)?;
            for s in &c.schedules {
                writeln!(
                    out,
                    "  schedule {} {:?} {} ({}){}",
                    s.schedule_id,
                    s.params.kind(),
                    s.cron,
                    s.timezone,
                    if s.enabled { "" } else { " disabled" }
                )?;
            }
        }
        None => writeln!(out, "config version: none yet")?,
    }
    let journal = Journal::open(state.jobs_dir())?;
    let jobs = journal.all()?;
    let running = jobs.iter().filter(|j| j.state == JobState::Running).count();
    writeln!(
        out,
        "jobs:           {} running, {} waiting",
        running,
        jobs.len() - running
    )?;
    for j in &jobs {
        writeln!(
            out,
            "  {} {:?} {:?}",
            j.spec.job_id,
            j.spec.params.kind(),
            j.state
        )?;
    }
    let outbox = Outbox::open(state.outbox_dir(), usize::MAX)?;
    let rejected = outbox.rejected();
    writeln!(
        out,
        "outbox:         {} waiting for the control plane, {} set aside",
        outbox.len(),
        rejected.len()
    )?;
    for (path, reason) in &rejected {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        writeln!(out, "  {}: {}", name.unwrap_or_default(), reason.trim())?;
    }
    Ok(out)
}

//! Who this process is among the data-parallel ranks, read from the environment of the
//! launcher that started it:
//!
//! - torchrun (and `runner run --nproc N`): `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//!   `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`; torchrun's agent already hosts the
//!   store there (`TORCHELASTIC_USE_AGENT_STORE=True`), so every rank is its client;
//! - `srun` (a Slurm job step): `SLURM_PROCID`, `SLURM_STEP_NUM_TASKS`, `SLURM_LOCALID`, the
//!   first host of the step's node list as the master and a port derived from the job and step
//!   ids (`MASTER_ADDR` and `MASTER_PORT` win where set);
//! - neither: one rank.

use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

/// This process's place among the ranks and where they meet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct World {
    pub rank: usize,
    pub size: usize,
    /// The rank among those on this node (its GPU index).
    pub local_rank: usize,
    /// Where the rendezvous store listens.
    pub master_addr: String,
    pub master_port: u16,
    /// The store is hosted by torchrun's agent (every rank is a client); otherwise rank 0 hosts it.
    pub agent_store: bool,
    /// Keys in the store are prefixed with this, so they do not collide with the agent's own
    /// (torch's `_create_c10d_store` uses the restart count the same way).
    pub store_prefix: String,
    /// Which launcher set it up, for messages.
    pub launcher: &'static str,
}

impl World {
    /// A run of one rank, without a process group.
    pub fn single() -> World {
        World {
            rank: 0,
            size: 1,
            local_rank: 0,
            master_addr: String::new(),
            master_port: 0,
            agent_store: false,
            store_prefix: String::new(),
            launcher: "a single process",
        }
    }

    /// The world the environment describes.
    pub fn from_env() -> Result<World> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let (Some(rank), Some(size)) = (var("RANK"), var("WORLD_SIZE")) {
            let launcher = match var("TORCHELASTIC_RUN_ID") {
                Some(_) => "torchrun",
                None => "the environment (RANK, WORLD_SIZE)",
            };
            let rank = number("RANK", &rank)?;
            let size = number("WORLD_SIZE", &size)?;
            let restarts = var("TORCHELASTIC_RESTART_COUNT").unwrap_or_else(|| "0".into());
            return World {
                rank,
                size,
                local_rank: var("LOCAL_RANK").map_or(Ok(rank), |v| number("LOCAL_RANK", &v))?,
                master_addr: var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
                master_port: port(var("MASTER_PORT").as_deref())?,
                agent_store: var("TORCHELASTIC_USE_AGENT_STORE")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true")),
                store_prefix: format!("runner/{restarts}/"),
                launcher,
            }
            .checked();
        }
        // Inside a job step (srun); a batch script alone is one process, whatever its tasks.
        if let (Some(rank), Some(size)) = (var("SLURM_PROCID"), var("SLURM_STEP_NUM_TASKS")) {
            let job = var("SLURM_JOB_ID").unwrap_or_default();
            let step = var("SLURM_STEP_ID").unwrap_or_default();
            let master_addr = match var("MASTER_ADDR") {
                Some(addr) => addr,
                None => first_host(
                    &var("SLURM_STEP_NODELIST")
                        .or_else(|| var("SLURM_JOB_NODELIST"))
                        .unwrap_or_else(|| "localhost".into()),
                )?,
            };
            let master_port = match var("MASTER_PORT") {
                Some(p) => port(Some(&p))?,
                None => slurm_port(&job, &step),
            };
            return World {
                rank: number("SLURM_PROCID", &rank)?,
                size: number("SLURM_STEP_NUM_TASKS", &size)?,
                local_rank: var("SLURM_LOCALID").map_or(Ok(0), |v| number("SLURM_LOCALID", &v))?,
                master_addr,
                master_port,
                agent_store: false,
                store_prefix: format!("runner/slurm-{job}.{step}/"),
                launcher: "srun",
            }
            .checked();
        }
        Ok(World::single())
    }

    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    fn checked(self) -> Result<World> {
        if self.size == 0 || self.rank >= self.size {
            bail!(
                "rank {} of a world of {} (from {}): the rank must be below the world size",
                self.rank,
                self.size,
                self.launcher
            );
        }
        if self.size > 1 && self.master_port == 0 {
            bail!(
                "{} ranks but no MASTER_PORT\n  hint: set MASTER_ADDR and MASTER_PORT, or launch with torchrun or `runner run --nproc N`",
                self.size
            );
        }
        Ok(self)
    }
}

fn number(name: &str, value: &str) -> Result<usize> {
    value
        .trim()
        .parse()
        .map_err(|_| anyhow!("{name}={value}: expected a whole number"))
}

fn port(value: Option<&str>) -> Result<u16> {
    match value {
        None => Ok(0),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow!("MASTER_PORT={v}: expected a port number (1-65535)")),
    }
}

/// A port every rank of a Slurm step derives alike: from the job and step ids, in 20000-59999.
pub fn slurm_port(job: &str, step: &str) -> u16 {
    let id = job.parse::<u64>().unwrap_or(0) * 97 + step.parse::<u64>().unwrap_or(0);
    20_000 + (id % 40_000) as u16
}

/// The first host of a Slurm node list (`node[1-4],gpu7` → `node1`), as `scontrol show
/// hostnames` expands it; a plain single name needs no scontrol.
fn first_host(nodelist: &str) -> Result<String> {
    if !nodelist.contains(['[', ',']) {
        return Ok(nodelist.to_string());
    }
    let out = Command::new("scontrol")
        .args(["show", "hostnames", nodelist])
        .output()
        .context("running scontrol to expand SLURM_STEP_NODELIST (or set MASTER_ADDR)")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_string)
        .ok_or_else(|| {
            anyhow!("scontrol show hostnames {nodelist} printed no host\n  hint: set MASTER_ADDR")
        })
}

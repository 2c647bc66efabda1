//! `runner run RECIPE --nproc N`: N local ranks started by the runner itself, as torchrun
//! would start them (the same environment, rank 0 hosting the store on a free port). Each line
//! a rank prints is prefixed with `[rank R]`. When a rank fails, the others are stopped and the
//! launch fails naming that rank and its error.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How the ranks ended.
pub struct Outcome {
    /// The first rank to fail, its exit status and its last error line.
    pub failed: Option<(usize, ExitStatus, String)>,
}

/// Runs the runner with `args` as `nproc` ranks on this machine and waits for them all. The
/// ranks' standard output goes to `out`, their standard error to this process's.
pub fn local(nproc: usize, args: &[OsString], out: &mut dyn Write) -> Result<Outcome> {
    if std::env::var_os("RANK").is_some() {
        bail!("--nproc inside a rank that a launcher already started (RANK is set)\n  hint: leave out --nproc under torchrun or srun");
    }
    let runner = std::env::current_exe().context("locating the runner executable")?;
    let port = free_port()?;
    // As torchrun, one thread per rank unless told otherwise; here the cores are shared out.
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let threads = std::env::var("OMP_NUM_THREADS")
        .ok()
        .unwrap_or_else(|| (cores / nproc).max(1).to_string());
    let mut ranks = Vec::with_capacity(nproc);
    let (lines, printed) = mpsc::channel();
    for rank in 0..nproc {
        let mut command = Command::new(&runner);
        command
            .args(args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", nproc.to_string())
            .env("LOCAL_WORLD_SIZE", nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("OMP_NUM_THREADS", &threads)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting rank {rank} ({})", runner.display()))?;
        let last_error = Arc::new(Mutex::new(String::new()));
        let stdout = relay(
            child.stdout.take(),
            rank,
            false,
            last_error.clone(),
            lines.clone(),
        );
        let stderr = relay(
            child.stderr.take(),
            rank,
            true,
            last_error.clone(),
            lines.clone(),
        );
        ranks.push(Rank {
            child,
            relays: vec![stdout, stderr],
            last_error,
            status: None,
        });
    }
    drop(lines);
    let mut failed = None;
    loop {
        print(&printed, out, Some(Duration::from_millis(50)));
        for (rank, r) in ranks.iter_mut().enumerate() {
            if r.status.is_none() {
                r.status = r.child.try_wait()?;
                if let Some(status) = r.status.filter(|s| !s.success()) {
                    failed.get_or_insert((rank, status));
                }
            }
        }
        if failed.is_some() || ranks.iter().all(|r| r.status.is_some()) {
            break;
        }
    }
    if failed.is_some() {
        stop(&mut ranks);
    }
    // What the ranks wrote last, up to the end of their output.
    print(&printed, out, None);
    for r in &mut ranks {
        for relay in r.relays.drain(..) {
            let _ = relay.join();
        }
    }
    Ok(Outcome {
        failed: failed.map(|(rank, status)| {
            let error = ranks[rank]
                .last_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default();
            (rank, status, error)
        }),
    })
}

struct Rank {
    child: Child,
    relays: Vec<JoinHandle<()>>,
    last_error: Arc<Mutex<String>>,
    status: Option<ExitStatus>,
}

/// A port nobody listens on now (the OS picks it; rank 0's store binds it next).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// A line of a rank's output, and whether it went to standard error.
type Line = (String, bool);

/// Prints the ranks' lines that have come: those waiting now (and within `wait`), or, with no
/// `wait`, all until every rank's output has ended.
fn print(lines: &Receiver<Line>, out: &mut dyn Write, wait: Option<Duration>) {
    let mut show = |(line, to_stderr): Line| {
        let _ = match to_stderr {
            true => std::io::stderr().write_all(line.as_bytes()),
            false => out.write_all(line.as_bytes()).and_then(|_| out.flush()),
        };
    };
    match wait {
        Some(wait) => {
            if let Ok(line) = lines.recv_timeout(wait) {
                show(line);
            }
            lines.try_iter().for_each(show);
        }
        None => lines.iter().for_each(show),
    }
}

/// Sends a rank's output line by line, prefixed with its rank, remembering its last error.
fn relay(
    stream: Option<impl Read + Send + 'static>,
    rank: usize,
    to_stderr: bool,
    last_error: Arc<Mutex<String>>,
    lines: Sender<Line>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let Some(stream) = stream else { return };
        for line in BufReader::new(stream).split(b'\n') {
            let Ok(line) = line else { return };
            let text = String::from_utf8_lossy(&line);
            // A progress line rewritten in place (\r) is shown as its last state.
            let text = text.rsplit('\r').next().unwrap_or_default().to_string();
            if text.starts_with("error:") {
                if let Ok(mut e) = last_error.lock() {
                    *e = text.clone();
                }
            }
            if lines
                .send((format!("[rank {rank}] {text}\n"), to_stderr))
                .is_err()
            {
                return;
            }
        }
    })
}

/// Ends the ranks still running: SIGTERM, then SIGKILL after a grace period.
fn stop(ranks: &mut [Rank]) {
    for r in ranks.iter().filter(|r| r.status.is_none()) {
        unsafe { libc::kill(r.child.id() as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for r in ranks.iter_mut().filter(|r| r.status.is_none()) {
        while Instant::now() < deadline {
            if let Ok(Some(status)) = r.child.try_wait() {
                r.status = Some(status);
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        if r.status.is_none() {
            let _ = r.child.kill();
            r.status = r.child.wait().ok();
        }
    }
}

/// A rank is killed when the launcher dies, however it dies (no rank outlives its launch).
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

//! The one integration-test binary (each test binary links libtorch, and linking is slow).

mod bad_inputs;
mod cli;
mod data;
mod estimates;
mod evaluation;
mod iag;
mod metrics;
mod models;
mod optimizer;
mod plans;
mod report;
mod schedules;
mod sweeps;
mod tensorboard;
mod training;
mod yaml;

/// Fails the test with the command's output unless it exited successfully.
pub fn assert_success(o: &std::process::Output) {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

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
mod tensorboard;
mod training;
mod yaml;

//! What logd and watchd share: configuration, the intake client and its
//! auth and retry policy, sinks, metrics and health, shutdown, logging.
//! Blocking code only: no async runtime.
//!
//! A daemon's `main`, in short:
//! ```no_run
//! use shared::config::{Config, OrExit};
//! let config = Config::from_env_and_args("logd", &[]).or_exit();
//! shared::logging::init(&config.common().log_filter);
//! let shutdown = shared::shutdown::Shutdown::install("logd").expect("signal handler");
//! let sink = shared::sink::Sink::open(&config.common().sink).expect("sink");
//! ```

pub mod auth;
pub mod calendar;
pub mod config;
pub mod health;
pub mod intake;
pub mod logging;
pub mod metrics;
mod one_send;
pub mod otlp;
mod resolver;
pub mod retry;
pub mod shutdown;
pub mod sink;

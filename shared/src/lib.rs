//! What logd and watchd share: configuration, the intake client and its
//! auth and retry policy, sinks, metrics and health, shutdown, logging.
//! Blocking code only: no async runtime.

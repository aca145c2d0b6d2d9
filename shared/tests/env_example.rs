//! `.env.example` at the repository root lists every common variable with
//! its real default, so a developer's `.env` starts from the truth.

use shared::config::{COMMON_VARS, DefaultValue};

#[test]
fn env_example_lists_every_common_variable_with_its_default() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../.env.example");
    let text = std::fs::read_to_string(path).expect(".env.example at the repository root");
    // `NAME=value` or `#NAME=value` lines.
    let entries: Vec<(&str, &str)> = text
        .lines()
        .map(|line| line.trim_start_matches('#'))
        .filter_map(|line| line.split_once('='))
        .filter(|(name, _)| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    for spec in COMMON_VARS {
        let Some((_, value)) = entries.iter().find(|(name, _)| *name == spec.name) else {
            panic!("{} is missing from .env.example", spec.name);
        };
        if let DefaultValue::Value(default) = spec.default {
            assert_eq!(*value, default, "default of {} in .env.example", spec.name);
        }
    }
    for daemon_var in [
        "LOGD_PODS_DIR",
        "LOGD_STATE_DIR",
        "LOGD_READ_FROM",
        "LOGD_BATCH_MAX_BYTES",
        "LOGD_BATCH_LINGER_MS",
        "LOGD_MAX_LINE_BYTES",
        "LOGD_EXCLUDE_NAMESPACES",
        "LOGD_EXCLUDE_POD_UID",
        "LOGD_METRICS_ADDR",
        "WATCHD_RESOURCES",
        "WATCHD_EXCLUDE",
        "WATCHD_BATCH_MAX_BYTES",
        "WATCHD_BATCH_LINGER_MS",
        "WATCHD_METRICS_ADDR",
    ] {
        assert!(
            entries.iter().any(|(name, _)| *name == daemon_var),
            "{daemon_var} is missing from .env.example"
        );
    }
}

//! logd: tails every container log under /var/log/pods and ships every line
//! to the HiK8s intake (or stdout). See ARCHITECTURE.md.

mod daemon;

use shared::config::OrExit;

use crate::daemon::settings::Settings;

fn main() {
    let settings = Settings::load().or_exit();
    shared::logging::init(&settings.common.log_filter);
    std::process::exit(daemon::run(settings));
}

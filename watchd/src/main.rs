//! watchd: see the library docs and `watchd --help`.

fn main() {
    std::process::exit(watchd::daemon::run());
}

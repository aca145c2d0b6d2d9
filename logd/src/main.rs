//! logd: tails every container log under /var/log/pods and ships every line
//! to the HiK8s intake (or stdout). See ARCHITECTURE.md.

mod daemon;

use shared::config::OrExit;

use crate::daemon::settings::Settings;

fn main() {
    one_malloc_arena();
    let settings = Settings::load().or_exit();
    shared::logging::init(&settings.common.log_filter);
    std::process::exit(daemon::run(settings));
}

/// glibc gives each thread that allocates its own arena, and each keeps its
/// freed memory: with buffers made in one thread and freed in another, the
/// steady bench held 10.2 MiB instead of 8.5. logd's threads allocate a few
/// buffers a second each, so sharing one arena costs nothing measurable.
/// And buffers of 320 KiB or more (the batches a slow intake lets grow) are
/// mapped and unmapped on their own: glibc's default threshold rises with
/// the first large buffer freed, and the heap then kept holes of every size
/// (a drain 25 ms away, 6 MiB held: 17.8 MiB without a fixed threshold,
/// 14.6 with one at 256 KiB). Reads of a
/// backlog (up to 288 KiB) stay on the heap: mapping each one cost the
/// drain on loopback a third of its CPU, in page faults and unmaps. Must
/// run before any thread starts.
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; no thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 320 * 1024);
    }
}

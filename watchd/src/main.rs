//! watchd: see the library docs and `watchd --help`.

fn main() {
    malloc_settings();
    std::process::exit(watchd::daemon::run());
}

/// glibc gives each thread that allocates its own arena, and each keeps
/// what was freed in it: objects parsed on `watchd-kube` are freed on
/// `watchd-process`, records made there are freed on the upload threads.
/// And its threshold for mapping a buffer on its own rises with the first
/// large buffer freed (a list page's text, a batch), after which those
/// buffers leave holes of every size in the heap. One arena, and buffers of
/// 256 KiB or more always mapped: the initial sync of 10,000 Pods peaked at
/// 14.9 MiB instead of 18.4 (`benches/initial_sync.rs`), no slower. Must
/// run before any thread starts.
fn malloc_settings() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::c_int;
        // glibc's malloc.h.
        const M_MMAP_THRESHOLD: c_int = -3;
        const M_ARENA_MAX: c_int = -8;
        unsafe extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        // SAFETY: mallopt only sets an allocator parameter; no thread runs yet.
        unsafe {
            mallopt(M_ARENA_MAX, 1);
            mallopt(M_MMAP_THRESHOLD, 256 * 1024);
        }
    }
}

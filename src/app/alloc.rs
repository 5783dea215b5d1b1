//! Tuning of the global allocator (mimalloc) for a long run that allocates and frees many
//! small objects: the `drover` binary and the benchmarks set the same options.

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`, mimalloc.h; the Rust
/// binding has no name for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets mimalloc's options. It must run before the first allocation (mimalloc maps its first
/// arena then), so the binaries call it from an `.init_array` constructor; see
/// [`tune_allocator_before_main!`](crate::tune_allocator_before_main).
///
/// - Freed pages are kept instead of given back to the system: a large run frees and reuses
///   memory all the time, and each page given back costs a page fault and zeroing when it is
///   used again (drover's memory goes at exit).
/// - mimalloc may ask for transparent huge pages: fresh memory then faults in 2 MiB at a time.
///   In a VM, page faults dominated the simulator's profile (a fifth of the time for 100,000
///   goals, half of that gone with huge pages).
pub extern "C" fn tune_allocator() {
    // SAFETY: setting an option is always allowed; it only tunes mimalloc.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        libmimalloc_sys::mi_option_set(libmimalloc_sys::mi_option_large_os_pages, 1);
    }
}

/// Declares a constructor that runs [`tune_allocator`] before `main` and before the Rust
/// runtime's first allocation; use it once in each binary that has mimalloc as its global
/// allocator.
#[macro_export]
macro_rules! tune_allocator_before_main {
    () => {
        #[used]
        #[unsafe(link_section = ".init_array")]
        static TUNE_ALLOCATOR: extern "C" fn() = $crate::app::alloc::tune_allocator;
    };
}

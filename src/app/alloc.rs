//! Tuning of the global allocator (mimalloc) for a long run that allocates and frees many
//! small objects: the `drover` binary and the benchmarks set the same options.

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`, mimalloc.h; the Rust
/// binding has no name for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets mimalloc's options. It must run before the first allocation (mimalloc maps its first
/// arena then), so the binaries call it from an `.init_array` constructor; see
/// [`tune_allocator_before_main!`](crate::tune_allocator_before_main). glibc passes such
/// constructors the program's arguments.
///
/// - Freed pages are kept instead of given back to the system: a large run frees and reuses
///   memory all the time, and each page given back costs a page fault and zeroing when it is
///   used again (drover's memory goes at exit).
/// - mimalloc may ask for transparent huge pages: fresh memory then faults in 2 MiB at a time.
///   In a VM, page faults dominated the simulator's profile (a fifth of the time for 100,000
///   goals, almost all of it gone with huge pages).
///
/// Internal subcommands (`drover __…`, e.g. the build supervisor, which forks for every build)
/// are small processes: they keep mimalloc's defaults, so a fork never copies a huge page.
///
/// # Safety
/// `argv` must hold `argc` valid C strings (or be null), as the C runtime passes them.
pub unsafe extern "C" fn tune_allocator(
    argc: libc::c_int,
    argv: *const *const libc::c_char,
    _envp: *const *const libc::c_char,
) {
    if argc >= 2 && !argv.is_null() {
        // SAFETY: the C runtime passes `argc` valid C strings.
        let first = unsafe { std::ffi::CStr::from_ptr(*argv.add(1)) };
        if first.to_bytes().starts_with(b"__") {
            return;
        }
    }
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
        static TUNE_ALLOCATOR: unsafe extern "C" fn(
            $crate::app::alloc::CInt,
            *const *const $crate::app::alloc::CChar,
            *const *const $crate::app::alloc::CChar,
        ) = $crate::app::alloc::tune_allocator;
    };
}

#[doc(hidden)]
pub use libc::{c_char as CChar, c_int as CInt};

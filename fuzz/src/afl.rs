//! The AFL++ side of a fuzz target: persistent mode with test cases in shared memory, the loop
//! that AFL++'s `__AFL_LOOP` and `__AFL_FUZZ_TESTCASE_BUF` macros give C programs.
//!
//! This is what the `afl` crate's `fuzz!` does, written out here because that crate depends on
//! `rustc_version` without using it: in a fuzz build `rustc_version` becomes a normal
//! dependency, the build scripts that use it (crc32c, flatbuffers) change hash, and DataFusion
//! and everything above them is compiled a second time (measured: 10 minutes on 2 cores), where
//! the fuzz build otherwise reuses the test build's artifacts.
//!
//! The one module of the fuzz crate with `unsafe`: the runtime's symbols are C, and the test
//! case is a buffer the runtime owns.

#![allow(unsafe_code)]

use std::io::Read;
use std::sync::atomic::AtomicI32;

// Provided by afl-compiler-rt.o, which the fuzz build links in (fuzz/rustc-wrapper).
unsafe extern "C" {
    fn __afl_persistent_loop(max_cnt: u32) -> i32;
    fn __afl_manual_init();
    static __afl_fuzz_len: *const u32;
    static __afl_fuzz_ptr: *const u8;
}

/// Tells the runtime that this program takes its test cases from shared memory. The runtime
/// writes it (0 when not under afl-fuzz), so it must live in writable memory: an atomic has
/// the layout of the C `int` and may be changed behind Rust's back.
#[unsafe(no_mangle)]
static __afl_sharedmem_fuzzing: AtomicI32 = AtomicI32::new(1);

/// afl-fuzz looks for these in the binary to choose persistent and deferred start-up.
static PERSISTENT_SIGNATURE: &str = "##SIG_AFL_PERSISTENT##\0";
static DEFERRED_SIGNATURE: &str = "##SIG_AFL_DEFER_FORKSRV##\0";

/// Runs `target` on every test case afl-fuzz sends, `iterations` per process (then the process
/// exits and afl-fuzz starts a fresh one, bounding whatever state a target accumulates). A
/// panic aborts, which is how afl-fuzz recognises a crash. Without afl-fuzz (no shared memory),
/// runs `target` once on standard input.
pub fn run(iterations: u32, target: fn(&[u8])) {
    std::hint::black_box(PERSISTENT_SIGNATURE);
    std::hint::black_box(DEFERRED_SIGNATURE);
    std::hint::black_box(&__afl_sharedmem_fuzzing);
    abort_on_panic();
    // SAFETY: the runtime's documented entry points, called once from the main thread before
    // the loop; the fork server starts here, after the target's own set-up.
    unsafe { __afl_manual_init() };
    // SAFETY: set by the runtime during __afl_manual_init and not changed afterwards.
    if unsafe { __afl_fuzz_ptr }.is_null() {
        let mut input = Vec::new();
        if std::io::stdin().read_to_end(&mut input).is_ok() {
            target(&input);
        }
        return;
    }
    // SAFETY: as above; between two calls of __afl_persistent_loop the runtime leaves the test
    // case (`__afl_fuzz_len` bytes at `__afl_fuzz_ptr`) alone, so the slice is valid for the
    // body of the loop, and it does not outlive it.
    while unsafe { __afl_persistent_loop(iterations) } != 0 {
        let input = unsafe { std::slice::from_raw_parts(__afl_fuzz_ptr, *__afl_fuzz_len as usize) };
        target(input);
    }
}

/// A panic, wherever it is caught, ends the process with SIGABRT after its message is printed.
pub fn abort_on_panic() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print(info);
        std::process::abort();
    }));
}

//! skyhook's kernel-side probes. Built for `bpfel-unknown-none` by the agent's build.rs.
//!
//! net/http server: an entry uprobe on `net/http.serverHandler.ServeHTTP` records the request
//! per goroutine; a uprobe on every RET instruction of the same function completes it and
//! writes one [`HttpServerRequest`] record. Never a uretprobe: Go moves goroutine stacks and a
//! rewritten return address kills the program.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod probes;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

//! Builds the eBPF programs of `agent-ebpf` for the BPF target and leaves the object in
//! OUT_DIR, where `probes` embeds it.
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    // aya-build passes `-Z build-std=core` only when RUSTC_BOOTSTRAP=1 is in its environment
    // (or the compiler is nightly); our pinned stable compiler needs it for the BPF target.
    // SAFETY: build scripts are single-threaded; nothing else reads the environment yet.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let toolchain = toolchain_channel().context("reading rust-toolchain.toml")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "agent-ebpf",
            root_dir: "../agent-ebpf",
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}

/// The pinned toolchain, so the eBPF crate is built by the same compiler as the agent.
fn toolchain_channel() -> anyhow::Result<String> {
    println!("cargo::rerun-if-changed=../rust-toolchain.toml");
    let text = std::fs::read_to_string("../rust-toolchain.toml")?;
    text.lines()
        .find_map(|l| {
            let l = l.trim();
            let v = l.strip_prefix("channel")?.trim().strip_prefix('=')?.trim();
            Some(v.trim_matches('"').to_string())
        })
        .context("no `channel = \"...\"` line")
}

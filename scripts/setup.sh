#!/usr/bin/env bash
# Idempotent set-up of everything skyhook's build, demo and tests need on a fresh Debian
# machine (run as root): the pinned Rust toolchain, LLVM 22 and bpf-linker for the eBPF
# programs, Go, and the Python venv with SkyWalking's official protocol stubs.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

# Pinned Rust (rust-toolchain.toml) with rust-src for -Z build-std=core.
toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
if ! command -v rustup >/dev/null; then
    say "rustup is required (https://rustup.rs); it is not on PATH"; exit 1
fi
if ! rustup component list --toolchain "$toolchain" --installed 2>/dev/null | grep -q '^rust-src'; then
    say "installing Rust $toolchain"
    rustup toolchain install "$toolchain" --profile minimal -c rust-src -c clippy -c rustfmt
fi

# bpf-linker 0.13 against Debian's LLVM 22 (the LLVM of Rust 1.98).
bpf_linker_version=0.13.0
if ! command -v bpf-linker >/dev/null || ! bpf-linker --version 2>/dev/null | grep -q "$bpf_linker_version"; then
    pkgs=(llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev)
    if ! dpkg -s "${pkgs[@]}" >/dev/null 2>&1; then
        say "installing ${pkgs[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${pkgs[@]}" >/dev/null
    fi
    say "installing bpf-linker $bpf_linker_version"
    LLVM_PREFIX=/usr/lib/llvm-22 cargo +"$toolchain" install bpf-linker --version "$bpf_linker_version" \
        --locked --no-default-features --features llvm-22
fi

# Go for the fixtures and examples.
if ! command -v go >/dev/null && [ ! -x /usr/local/go/bin/go ]; then
    say "Go is required to build the example services and test fixtures"; exit 1
fi

# Official SkyWalking stubs for the conformance checks.
if ! .venv/bin/python -c 'import skywalking.protocol.language_agent.Tracing_pb2' >/dev/null 2>&1; then
    say "creating .venv with apache-skywalking==1.2.0"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/conformance/requirements.txt
fi
say "ready"

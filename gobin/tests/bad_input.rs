//! Hostile and broken input: every case is a clear error, never a panic.
#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use std::path::{Path, PathBuf};

use common::{Variant, fixture, scratch};
use gobin::{Error, GoBinary};

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Deterministic pseudo-random bytes (xorshift64).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn open_err(path: &Path) -> Error {
    match GoBinary::open(path) {
        Ok(bin) => panic!("{} opened: {bin:?}", path.display()),
        Err(e) => e,
    }
}

#[test]
fn truncated_go_binary() {
    let full = std::fs::read(fixture(Variant::Static)).unwrap();
    let path = write("truncated-100", &full[..100]);
    let err = open_err(&path);
    assert!(matches!(err, Error::Truncated { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{}: truncated ELF file", path.display())
    );
    // Shorter than the ELF header itself.
    let err = open_err(&write("truncated-40", &full[..40]));
    assert!(matches!(err, Error::Truncated { .. }), "{err:?}");
}

#[test]
fn non_elf_file() {
    let path = write("script.sh", b"#!/bin/sh\necho hello\n");
    let err = open_err(&path);
    assert!(matches!(err, Error::NotElf { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{}: not an ELF file", path.display())
    );
}

#[test]
fn non_go_elf() {
    let err = open_err(Path::new("/bin/true"));
    assert!(matches!(err, Error::NotGo { .. }), "{err:?}");
    assert_eq!(err.to_string(), "/bin/true: not a Go binary");
}

#[test]
fn zero_length_file() {
    let err = open_err(&write("empty", b""));
    assert!(matches!(err, Error::NotElf { .. }), "{err:?}");
}

#[test]
fn random_bytes() {
    let err = open_err(&write("random", &noise(64 * 1024, 0x9e37_79b9_7f4a_7c15)));
    assert!(matches!(err, Error::NotElf { .. }), "{err:?}");
    // Random bytes behind a valid ELF magic: some error, no panic.
    for seed in 1..64u64 {
        let mut bytes = noise(4096, seed);
        bytes[..4].copy_from_slice(b"\x7fELF");
        bytes[4] = 1 + (seed % 2) as u8;
        bytes[5] = 1;
        let _ = open_err(&write("random-elf", &bytes));
    }
}

#[test]
fn missing_file_and_directory() {
    let err = open_err(Path::new("/nonexistent/gobin/binary"));
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(std::error::Error::source(&err).is_some());
    let err = open_err(Path::new("/"));
    assert!(
        matches!(err, Error::Io { .. } | Error::NotElf { .. }),
        "{err:?}"
    );
}

/// Truncations and byte flips of a real binary: whatever opens must answer every query
/// without panicking.
#[test]
fn corrupted_go_binaries_never_panic() {
    let full = std::fs::read(fixture(Variant::Default)).unwrap();
    let len = full.len();
    let mut cases: Vec<Vec<u8>> = [64, 65, 200, 4096, len / 3, len / 2, len - 4096, len - 1]
        .iter()
        .map(|&n| full[..n].to_vec())
        .collect();
    // Flip bytes in the ELF header, program headers, section headers (at the end) and
    // the middle of the file.
    for (i, seed) in (1..40u64).enumerate() {
        let mut bytes = full.clone();
        let flips = noise(16, seed);
        let region = match i % 4 {
            0 => 0..64,
            1 => 64..1024,
            2 => len - 8192..len,
            _ => len / 2..len / 2 + 65536,
        };
        for chunk in flips.chunks(2) {
            let pos = region.start + usize::from(chunk[0]) * 257 % region.len();
            bytes[pos] ^= chunk[1] | 1;
        }
        cases.push(bytes);
    }
    let mut opened = 0;
    for (i, bytes) in cases.iter().enumerate() {
        let path = write(&format!("corrupt-{i}"), bytes);
        let Ok(bin) = GoBinary::open(&path) else {
            continue;
        };
        opened += 1;
        let _ = bin.build_mode();
        let _ = bin.require_register_abi();
        if let Some(f) = bin.function("net/http.serverHandler.ServeHTTP") {
            let _ = bin.ret_sites(&f);
            let _ = bin.file_offset(f.address);
        }
        let _ = bin.struct_field_offsets(&[("runtime.g", "goid"), ("net/http.Request", "URL")]);
    }
    assert!(
        opened > 0,
        "no corrupted binary opened; the test exercises nothing"
    );
}

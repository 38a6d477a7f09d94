//! Inspection of real Go binaries built by the machine's `go`.
#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use common::{MODULE, Variant, fixture, go_env};
use gobin::{Arch, Error, Function, GoBinary};

const SERVE_HTTP: &str = "net/http.serverHandler.ServeHTTP";

/// The fields the agent asks for, in one batch.
const AGENT_FIELDS: [(&str, &str); 6] = [
    ("net/http.Request", "Method"),
    ("net/http.Request", "URL"),
    ("runtime.g", "goid"),
    ("net/url.URL", "Path"),
    ("net/http.response", "status"),
    ("net/http.Request", "Header"),
];

fn open(variant: Variant) -> GoBinary {
    let path = fixture(variant);
    GoBinary::open(path).unwrap_or_else(|e| panic!("open {}: {e:?}", path.display()))
}

fn serve_http(bin: &GoBinary) -> Function {
    let f = bin
        .function(SERVE_HTTP)
        .unwrap_or_else(|| panic!("{SERVE_HTTP} missing in {}", bin.path().display()));
    assert_eq!(f.name, SERVE_HTTP);
    assert!(f.size > 0, "{f:?}");
    f
}

/// Build info that every variant shares.
fn assert_build_info(bin: &GoBinary, goarch: &str) {
    let info = bin.build_info();
    assert_eq!(info.go_version, go_env("GOVERSION"));
    assert_eq!(info.main_path.as_deref(), Some(MODULE));
    assert_eq!(info.main_package.as_deref(), Some(MODULE));
    assert_eq!(info.main_version.as_deref(), Some("(devel)"));
    assert!(info.deps.is_empty(), "{:?}", info.deps);
    let setting = |k: &str| {
        info.settings
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(setting("GOARCH"), Some(goarch));
    assert_eq!(setting("GOOS"), Some("linux"));
    bin.require_register_abi().unwrap();
}

/// Every RET site lies inside `f` and its file bytes decode as RET on x86-64.
fn assert_x86_rets(bin: &GoBinary, f: &Function) {
    let sites = bin.ret_sites(f).unwrap();
    assert!(!sites.is_empty(), "no RET in {f:?}");
    for site in sites {
        assert!(site >= f.address && site < f.address + f.size, "{site:#x}");
        let off = bin.file_offset(site).unwrap() as usize;
        let byte = bin.data()[off];
        assert!(byte == 0xc3 || byte == 0xc2, "{site:#x}: byte {byte:#04x}");
    }
}

fn assert_offsets(bin: &GoBinary) -> Vec<Option<u64>> {
    assert_eq!(
        bin.struct_field_offset("net/http.Request", "Method")
            .unwrap(),
        Some(0)
    );
    assert_eq!(
        bin.struct_field_offset("net/http.Request", "URL").unwrap(),
        Some(16)
    );
    let goid = bin.struct_field_offset("runtime.g", "goid").unwrap();
    assert!(goid.is_some_and(|g| g > 0), "goid {goid:?}");
    assert_eq!(
        bin.struct_field_offset("net/http.Request", "NoSuchField")
            .unwrap(),
        None
    );
    assert_eq!(
        bin.struct_field_offset("net/http.NoSuchType", "Method")
            .unwrap(),
        None
    );

    let batch = bin.struct_field_offsets(&AGENT_FIELDS).unwrap();
    assert!(batch.iter().all(Option::is_some), "{batch:?}");
    assert_eq!(batch[0], Some(0));
    assert_eq!(batch[1], Some(16));
    assert_eq!(batch[2], goid);
    // Path follows Scheme, Opaque (strings), User (pointer), Host (string): 16+16+8+16.
    assert_eq!(batch[3], Some(56));
    for (i, (ty, field)) in AGENT_FIELDS.iter().enumerate() {
        assert_eq!(
            bin.struct_field_offset(ty, field).unwrap(),
            batch[i],
            "{ty}.{field}"
        );
    }
    batch
}

#[test]
fn default_build() {
    let bin = open(Variant::Default);
    assert_eq!(bin.arch(), Arch::X86_64);
    assert_build_info(&bin, "amd64");
    let mode = bin.build_mode();
    assert!(!mode.pie && !mode.stripped && mode.has_dwarf, "{mode:?}");
    // With cgo on, importing net links the C resolver: dynamic.
    assert_eq!(mode.static_linked, go_env("CGO_ENABLED") != "1", "{mode:?}");

    let f = serve_http(&bin);
    // A non-PIE amd64 Go binary maps text at 0x400000 + offset.
    assert_eq!(bin.file_offset(f.address), Some(f.address - 0x400000));
    assert_x86_rets(&bin, &f);
    assert_eq!(bin.file_offset(0), None);
    assert_eq!(bin.file_offset(u64::MAX), None);
    assert_offsets(&bin);
}

#[test]
fn stripped_build_reports_missing_symtab_and_dwarf() {
    let bin = open(Variant::Stripped);
    assert_build_info(&bin, "amd64");
    let mode = bin.build_mode();
    assert!(mode.stripped && !mode.has_dwarf, "{mode:?}");
    // No .symtab: functions come from .gopclntab (tests/pclntab.rs checks the addresses).
    let (f, source) = bin.function_source(SERVE_HTTP).unwrap();
    assert_eq!(source, gobin::SymbolSource::Pclntab);
    assert_eq!(f, serve_http(&bin));
    assert_eq!(bin.symbol_address("main.main"), None);
    let err = bin
        .struct_field_offset("net/http.Request", "Method")
        .unwrap_err();
    assert!(matches!(err, Error::NoDwarf { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{}: no DWARF", bin.path().display())
    );
    let err = bin.struct_field_offsets(&AGENT_FIELDS).unwrap_err();
    assert!(matches!(err, Error::NoDwarf { .. }), "{err:?}");
}

#[test]
fn pie_build() {
    let bin = open(Variant::Pie);
    assert_build_info(&bin, "amd64");
    let mode = bin.build_mode();
    assert!(mode.pie && !mode.stripped && mode.has_dwarf, "{mode:?}");
    assert!(
        bin.build_info()
            .settings
            .contains(&("-buildmode".into(), "pie".into()))
    );
    let f = serve_http(&bin);
    assert_x86_rets(&bin, &f);
    assert_offsets(&bin);
}

#[test]
fn static_build() {
    let bin = open(Variant::Static);
    assert_build_info(&bin, "amd64");
    let mode = bin.build_mode();
    assert!(
        mode.static_linked && !mode.pie && !mode.stripped,
        "{mode:?}"
    );
    assert!(
        bin.build_info()
            .settings
            .contains(&("CGO_ENABLED".into(), "0".into()))
    );
    let f = serve_http(&bin);
    assert_x86_rets(&bin, &f);
    assert_offsets(&bin);
}

#[test]
fn arm64_cross_build() {
    let bin = open(Variant::Arm64);
    assert_eq!(bin.arch(), Arch::Aarch64);
    assert_build_info(&bin, "arm64");
    let f = serve_http(&bin);
    assert_eq!(f.address % 4, 0);
    let sites = bin.ret_sites(&f).unwrap();
    assert!(!sites.is_empty(), "no RET in {f:?}");
    for site in &sites {
        assert!(*site >= f.address && *site < f.address + f.size);
        let off = bin.file_offset(*site).unwrap() as usize;
        let word = u32::from_le_bytes(bin.data()[off..off + 4].try_into().unwrap());
        assert_eq!(word & 0xffff_fc1f, 0xd65f_0000, "{site:#x}: {word:#010x}");
    }
    let arm = assert_offsets(&bin);
    // Same 64-bit layout as amd64.
    let amd = open(Variant::Static)
        .struct_field_offsets(&AGENT_FIELDS)
        .unwrap();
    assert_eq!(arm, amd);
}

#[test]
fn missing_function_is_none() {
    let bin = open(Variant::Default);
    assert_eq!(bin.function("net/http.noSuchFunction"), None);
    assert_eq!(bin.function(""), None);
    assert!(bin.function("main.main").is_some());
}

#[test]
fn ret_sites_of_a_function_outside_the_file_is_an_error() {
    let bin = open(Variant::Default);
    let bogus = Function {
        name: "bogus".into(),
        address: u64::MAX - 4,
        size: 100,
    };
    let err = bin.ret_sites(&bogus).unwrap_err();
    assert!(matches!(err, Error::CodeNotInFile { .. }), "{err:?}");
    // A real function cut to zero bytes has no RET, and that is not an error.
    let f = Function {
        size: 0,
        ..serve_http(&bin)
    };
    assert_eq!(bin.ret_sites(&f).unwrap(), Vec::<u64>::new());
}

#[test]
fn uncompressed_dwarf_gives_the_same_offsets() {
    let bin = open(Variant::UncompressedDwarf);
    assert!(bin.build_mode().has_dwarf);
    let plain = assert_offsets(&bin);
    let compressed = open(Variant::Static)
        .struct_field_offsets(&AGENT_FIELDS)
        .unwrap();
    assert_eq!(plain, compressed);
}

#[test]
fn i386_is_inspected_but_has_no_ret_decoder() {
    let bin = open(Variant::I386);
    assert_eq!(bin.arch(), Arch::Other(3)); // EM_386
    assert_build_info(&bin, "386");
    let f = serve_http(&bin);
    assert!(bin.file_offset(f.address).is_some());
    let err = bin.ret_sites(&f).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedArch { machine: 3, .. }),
        "{err:?}"
    );
    // 32-bit layout: a string is 8 bytes.
    assert_eq!(
        bin.struct_field_offset("net/http.Request", "URL").unwrap(),
        Some(8)
    );
}

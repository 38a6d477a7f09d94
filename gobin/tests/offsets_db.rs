//! The embedded offsets database against the DWARF of real binaries built by the machine's
//! `go`, whose release must be in the database.
#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use common::{Variant, fixture};
use gobin::offsets::{STD_FIELDS, resolve_with};
use gobin::{Arch, FieldResolution, GoBinary, Lookup, OffsetSource, OffsetsDb};

fn open(variant: Variant) -> GoBinary {
    let path = fixture(variant);
    GoBinary::open(path).unwrap_or_else(|e| panic!("open {}: {e:?}", path.display()))
}

/// DWARF offsets of every `STD_FIELDS` entry.
fn dwarf(bin: &GoBinary) -> Vec<Option<u64>> {
    bin.struct_field_offsets(STD_FIELDS).unwrap()
}

#[test]
fn database_equals_dwarf_for_the_machines_go_on_each_arch() {
    let db = OffsetsDb::embedded();
    for (variant, arch) in [
        (Variant::Default, Arch::X86_64),
        (Variant::Arm64, Arch::Aarch64),
    ] {
        let bin = open(variant);
        assert_eq!(bin.arch(), arch);
        let version = bin.build_info().go_version.clone();
        assert!(
            db.covers(&version, arch),
            "{version} ({arch:?}) is not in gobin/offsets/go.tsv: run `cargo xtask offsets --versions {version}`"
        );
        for ((t, f), offset) in STD_FIELDS.iter().zip(dwarf(&bin)) {
            let want = match offset {
                Some(o) => Lookup::Found(o),
                None => Lookup::AbsentInVersion,
            };
            assert_eq!(
                db.lookup(&version, arch, t, f),
                want,
                "{version} {arch:?} {t}.{f}"
            );
        }
    }
}

#[test]
fn stripped_binary_resolves_from_the_database_like_dwarf() {
    let stripped = open(Variant::Stripped);
    let mode = stripped.build_mode();
    assert!(mode.stripped && !mode.has_dwarf, "{mode:?}");
    let reference = dwarf(&open(Variant::Default));
    let got = stripped.resolve_fields(STD_FIELDS);
    assert_eq!(got.len(), STD_FIELDS.len());
    let version = &stripped.build_info().go_version;
    for (((t, f), r), want) in STD_FIELDS.iter().zip(&got).zip(reference) {
        match want {
            Some(o) => assert_eq!(
                r,
                &FieldResolution {
                    offset: Some(o),
                    source: Some(OffsetSource::OffsetsDb),
                    reason: None,
                },
                "{t}.{f}"
            ),
            None => assert_eq!(
                r.reason.as_deref(),
                Some(format!("{t}.{f} does not exist in {version}").as_str()),
                "{t}.{f}"
            ),
        }
    }
}

#[test]
fn binary_with_dwarf_resolves_from_dwarf() {
    let bin = open(Variant::Default);
    let reference = dwarf(&bin);
    let got = bin.resolve_fields(STD_FIELDS);
    for (((t, f), r), want) in STD_FIELDS.iter().zip(&got).zip(reference) {
        if want.is_some() {
            assert_eq!(r.offset, want, "{t}.{f}");
            assert_eq!(r.source, Some(OffsetSource::Dwarf), "{t}.{f}");
            assert_eq!(r.reason, None, "{t}.{f}");
        }
    }
    // A type the binary's DWARF lacks falls back to the database, which does not know it.
    let miss = bin.resolve_fields(&[("net/http.NoSuchType", "X")]);
    assert_eq!(miss[0].offset, None);
    assert_eq!(
        miss[0].reason.as_deref(),
        Some(
            "not in the binary's DWARF and the offsets database does not record net/http.NoSuchType.X"
        )
    );
}

#[test]
fn stripped_binary_of_an_unknown_release_is_never_guessed() {
    let stripped = open(Variant::Stripped);
    let version = stripped.build_info().go_version.clone();
    let db = OffsetsDb::parse(
        "go1.21.0\tamd64\truntime.g\tgoid\t152\n\
         go1.23.4\tamd64\truntime.g\tgoid\t152\n",
    )
    .unwrap();
    assert!(!db.covers(&version, Arch::X86_64));
    let got = resolve_with(&stripped, &db, &[("runtime.g", "goid")]);
    assert_eq!(
        got,
        [FieldResolution {
            offset: None,
            source: None,
            reason: Some(format!(
                "no DWARF and {version} is not in the offsets database (it covers go1.21.0 … go1.23.4)"
            )),
        }]
    );
}

#[test]
fn stripped_binary_missing_field_of_its_release_is_reported_as_absent() {
    let stripped = open(Variant::Stripped);
    let version = stripped.build_info().go_version.clone();
    let db = OffsetsDb::parse(&format!(
        "{version}\tamd64\tnet/http.Request\tMethod\t0\n\
         {version}\tamd64\tnet/http.Request\tPattern\t-\n\
         {version}\tarm64\tnet/http.Request\tMethod\t0\n"
    ))
    .unwrap();
    let got = resolve_with(
        &stripped,
        &db,
        &[
            ("net/http.Request", "Pattern"),
            ("net/http.Request", "Method"),
            ("net/http.Request", "Proto"),
        ],
    );
    assert_eq!(
        got[0].reason.as_deref(),
        Some(format!("net/http.Request.Pattern does not exist in {version}").as_str())
    );
    assert_eq!(got[1].offset, Some(0));
    assert_eq!(got[1].source, Some(OffsetSource::OffsetsDb));
    assert_eq!(
        got[2].reason.as_deref(),
        Some("no DWARF and the offsets database does not record net/http.Request.Proto")
    );

    // Known release, other architecture only.
    let arm_only = OffsetsDb::parse(&format!("{version}\tarm64\truntime.g\tgoid\t152\n")).unwrap();
    let got = resolve_with(&stripped, &arm_only, &[("runtime.g", "goid")]);
    assert_eq!(
        got[0].reason.as_deref(),
        Some(
            format!("no DWARF and {version} is in the offsets database but not for amd64").as_str()
        )
    );
}

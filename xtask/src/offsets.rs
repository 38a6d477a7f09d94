//! `cargo xtask offsets`: regenerates `gobin/offsets/go.tsv`, the struct offsets database
//! for binaries without DWARF.
//!
//! For each Go release, the machine's `go` runs that release's toolchain (`GOTOOLCHAIN=goX`,
//! fetched once from the Go module proxy into the module cache), builds a small program that
//! reaches every type of [`gobin::offsets::STD_FIELDS`] for each GOARCH, and reads the
//! offsets back from the program's DWARF with [`gobin::GoBinary::struct_field_offsets`].
use std::{
    collections::{BTreeSet, VecDeque},
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use gobin::{
    GoBinary,
    offsets::{Fact, GOARCHES, OffsetsDb, STD_FIELDS},
    parse_go_version,
};
use skyhook_tests::{collector::repo_root, gobuild::go_command};

/// The database, relative to the repository root.
pub const DB_PATH: &str = "gobin/offsets/go.tsv";
/// Oldest release covered: go1.21 is the first with toolchain downloads.
const OLDEST: (u32, u32, u32) = (1, 21, 0);
/// Platform of the toolchain binaries fetched (they cross-compile to every GOARCH).
const TOOLCHAIN_PLATFORM: &str = "linux-amd64";

/// The program built with each release. Every type of `STD_FIELDS` must be reachable so the
/// linker writes its DWARF; fields that exist only in some releases are not named.
const PROGRAM: &str = r#"package main

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
)

func main() {
	u := &url.URL{Path: "/", RawQuery: os.Getenv("Q"), Host: "h"}
	r := &http.Request{Method: "GET", URL: u, Host: "h", ProtoMajor: 1}
	fmt.Println(r.Context(), r.Header, u.String())
	if len(os.Args) > 1 {
		_ = http.ListenAndServe(os.Args[1], nil)
	}
}
"#;

#[derive(clap::Args)]
pub struct OffsetsArgs {
    /// Go releases, comma-separated (`go1.22.3` or `1.22.3`), or `all` for every release
    /// from go1.21.0 the module proxy lists. Default: `all`, or with --check the machine's go.
    #[arg(long)]
    versions: Option<String>,
    /// Releases processed in parallel.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Regenerate the given releases and fail if they differ from the committed file,
    /// without writing it.
    #[arg(long)]
    check: bool,
}

pub fn run(args: OffsetsArgs) -> anyhow::Result<()> {
    let root = repo_root()?;
    let work = work_dir()?;
    let versions = match args.versions.as_deref() {
        Some("all") => proxy_releases(&work)?,
        Some(list) => parse_list(list)?,
        None if args.check => vec![local_go_version()?],
        None => proxy_releases(&work)?,
    };
    if versions.is_empty() {
        bail!("no Go releases to process");
    }
    let started = Instant::now();
    eprintln!(
        "xtask offsets: {} release(s), {} job(s): {} … {}",
        versions.len(),
        args.jobs.max(1),
        versions[0],
        versions[versions.len() - 1]
    );
    let db_path = root.join(DB_PATH);
    let committed_text =
        std::fs::read_to_string(&db_path).with_context(|| format!("reading {DB_PATH}"))?;
    let committed =
        OffsetsDb::parse(&committed_text).with_context(|| format!("parsing {DB_PATH}"))?;
    // Each finished release is written at once, so an interrupted run keeps its progress.
    let current = Mutex::new(committed.facts());
    let write_release = |fresh: &[Fact]| -> anyhow::Result<()> {
        if args.check {
            return Ok(());
        }
        let Some(version) = fresh.first().map(|f| f.go_version.clone()) else {
            return Ok(());
        };
        let mut current = current
            .lock()
            .map_err(|_| anyhow::anyhow!("offsets lock poisoned"))?;
        let base = OffsetsDb::from_facts(current.iter().cloned()).context("current facts")?;
        let merged = merge(&base, std::slice::from_ref(&version), fresh.to_vec())?;
        std::fs::write(&db_path, merged.to_tsv()).with_context(|| format!("writing {DB_PATH}"))?;
        *current = merged.facts();
        Ok(())
    };
    let facts = generate(&work, &schedule(&versions), args.jobs, &write_release)?;
    if args.check {
        check(&committed, &versions, &facts)?;
        eprintln!(
            "xtask offsets: {DB_PATH} matches {} release(s) ({:.0?})",
            versions.len(),
            started.elapsed()
        );
        return Ok(());
    }
    let merged = OffsetsDb::parse(&std::fs::read_to_string(&db_path)?)
        .with_context(|| format!("parsing the written {DB_PATH}"))?;
    eprintln!(
        "xtask offsets: wrote {DB_PATH}: {} facts, {} releases ({} regenerated in {:.0?})",
        merged.len(),
        merged.versions().len(),
        versions.len(),
        started.elapsed()
    );
    Ok(())
}

/// Processing order: the newest patch of each minor release first (so an interrupted run
/// still spans every minor), then the others, newest first.
fn schedule(versions: &[String]) -> Vec<String> {
    let minor = |v: &str| parse_go_version(v).map(|(a, b, _)| (a, b));
    let mut sorted = versions.to_vec();
    sorted.sort_by_key(|v| std::cmp::Reverse(parse_go_version(v)));
    let mut newest_of_minor: Vec<String> = Vec::new();
    let mut rest = Vec::new();
    for v in sorted {
        if newest_of_minor.iter().any(|n| minor(n) == minor(&v)) {
            rest.push(v);
        } else {
            newest_of_minor.push(v);
        }
    }
    newest_of_minor.reverse();
    newest_of_minor.extend(rest);
    newest_of_minor
}

/// `go1.22.3,1.23.0` → `["go1.22.3", "go1.23.0"]`, validated and sorted.
fn parse_list(list: &str) -> anyhow::Result<Vec<String>> {
    let mut out = BTreeSet::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let v = if item.starts_with("go") {
            item.to_owned()
        } else {
            format!("go{item}")
        };
        if !is_release(&v) {
            bail!("{item:?} is not a Go release such as go1.22.3");
        }
        out.insert((parse_go_version(&v), v));
    }
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

/// An exact release `goX.Y.Z` (no rc, beta or suffix).
fn is_release(v: &str) -> bool {
    v.strip_prefix("go").is_some_and(|n| {
        let parts: Vec<&str> = n.split('.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Every release from [`OLDEST`] published as a toolchain module, oldest first.
fn proxy_releases(work: &Path) -> anyhow::Result<Vec<String>> {
    let dir = work.join("list");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("go.mod"), "module offsets.list\n\ngo 1.21\n")?;
    let out = go(&dir)
        .env("GOTOOLCHAIN", "local")
        .args(["list", "-m", "-versions", "golang.org/toolchain"])
        .output()
        .context("running go list -m -versions golang.org/toolchain")?;
    if !out.status.success() {
        bail!(
            "go list -m -versions golang.org/toolchain failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(releases_from_listing(&String::from_utf8_lossy(&out.stdout)))
}

/// Picks `vX-goA.B.C.linux-amd64` entries of a `go list -m -versions` line.
fn releases_from_listing(listing: &str) -> Vec<String> {
    let suffix = format!(".{TOOLCHAIN_PLATFORM}");
    let mut out: Vec<String> = listing
        .split_whitespace()
        .filter_map(|tok| {
            let v = tok.split_once("-go")?.1.strip_suffix(&suffix)?;
            let v = format!("go{v}");
            (is_release(&v) && parse_go_version(&v).is_some_and(|n| n >= OLDEST)).then_some(v)
        })
        .collect();
    out.sort_by_key(|v| parse_go_version(v));
    out.dedup();
    out
}

fn local_go_version() -> anyhow::Result<String> {
    let out = go(Path::new("/"))
        .env("GOTOOLCHAIN", "local")
        .args(["env", "GOVERSION"])
        .output()
        .context("running go env GOVERSION")?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || !is_release(&v) {
        bail!("the machine's go reports {v:?}, not a release");
    }
    Ok(v)
}

/// A `go` command (the machine's) in `dir`, with a build environment that ignores the
/// caller's workspace and cgo.
fn go(dir: &Path) -> Command {
    let mut cmd = Command::new(go_command());
    cmd.current_dir(dir)
        .env("GOFLAGS", "-mod=mod")
        .env("GOWORK", "off")
        .env("CGO_ENABLED", "0")
        .env("GOOS", "linux")
        .env_remove("GOROOT")
        .env_remove("GOARCH");
    if std::env::var_os("HOME").is_none() {
        cmd.env("HOME", "/root");
    }
    cmd
}

/// Builds and reads every release, `jobs` at a time; facts of all of them, any order.
fn generate(
    work: &Path,
    versions: &[String],
    jobs: usize,
    on_release: &(dyn Fn(&[Fact]) -> anyhow::Result<()> + Sync),
) -> anyhow::Result<Vec<Fact>> {
    let queue = Mutex::new(versions.iter().cloned().collect::<VecDeque<_>>());
    let results = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    let done = Mutex::new(0usize);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, versions.len()) {
            s.spawn(|| {
                loop {
                    let Some(v) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                        return;
                    };
                    let t = Instant::now();
                    let r = release_facts(work, &v);
                    let n = done.lock().map(|mut d| {
                        *d += 1;
                        *d
                    });
                    let n = n.unwrap_or(0);
                    match r {
                        Ok(facts) => {
                            eprintln!(
                                "xtask offsets: {v} done in {:.1?} [{n}/{}]",
                                round(t.elapsed()),
                                versions.len()
                            );
                            if let Err(e) = on_release(&facts) {
                                eprintln!("xtask offsets: {v}: {e:#}");
                                if let Ok(mut errs) = errors.lock() {
                                    errs.push(format!("{v}: {e:#}"));
                                }
                            }
                            if let Ok(mut all) = results.lock() {
                                all.extend(facts);
                            }
                        }
                        Err(e) => {
                            eprintln!("xtask offsets: {v} FAILED: {e:#}");
                            if let Ok(mut errs) = errors.lock() {
                                errs.push(format!("{v}: {e:#}"));
                            }
                        }
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap_or_default();
    if !errors.is_empty() {
        bail!("{} release(s) failed:\n{}", errors.len(), errors.join("\n"));
    }
    Ok(results.into_inner().unwrap_or_default())
}

fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX))
}

/// Builds the program with release `version` for each GOARCH and reads `STD_FIELDS`.
fn release_facts(work: &Path, version: &str) -> anyhow::Result<Vec<Fact>> {
    let dir = work.join(version);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write_if_changed(&dir.join("go.mod"), "module offsets.probe\n\ngo 1.21\n")?;
    write_if_changed(&dir.join("main.go"), PROGRAM)?;
    let mut facts = Vec::new();
    for goarch in GOARCHES {
        let exe = dir.join(format!("probe-{goarch}"));
        let out = go(&dir)
            .env("GOTOOLCHAIN", version)
            .env("GOARCH", goarch)
            // Layouts do not depend on optimisation; skipping it shortens each build.
            .args(["build", "-gcflags=all=-N -l", "-o"])
            .arg(&exe)
            .arg(".")
            .output()
            .with_context(|| format!("running go build with {version}"))?;
        if !out.status.success() {
            bail!(
                "go build with GOTOOLCHAIN={version} GOARCH={goarch} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        facts.extend(binary_facts(&exe, version, goarch)?);
    }
    Ok(facts)
}

/// The `STD_FIELDS` facts of one built program, checked against what it claims to be.
fn binary_facts(exe: &Path, version: &str, goarch: &str) -> anyhow::Result<Vec<Fact>> {
    let bin = GoBinary::open(exe).with_context(|| format!("opening {}", exe.display()))?;
    let built_by = bin.build_info().go_version.trim();
    if built_by != version {
        bail!("{} was built by {built_by:?}, not {version}", exe.display());
    }
    if gobin::offsets::goarch(bin.arch()) != Some(goarch) {
        bail!("{} is {:?}, not {goarch}", exe.display(), bin.arch());
    }
    let offsets = bin
        .struct_field_offsets(STD_FIELDS)
        .with_context(|| format!("reading DWARF of {}", exe.display()))?;
    // A type with no field found is missing from the DWARF (the program does not reach
    // it), which must not be recorded as "absent in this release".
    for (type_name, _) in STD_FIELDS {
        let any = STD_FIELDS
            .iter()
            .zip(&offsets)
            .any(|((t, _), o)| t == type_name && o.is_some());
        if !any {
            bail!(
                "{type_name} is not in the DWARF of {}: the program must use it",
                exe.display()
            );
        }
    }
    Ok(STD_FIELDS
        .iter()
        .zip(offsets)
        .map(|((type_name, field), offset)| Fact {
            go_version: version.to_owned(),
            goarch: goarch.to_owned(),
            type_name: (*type_name).to_owned(),
            field: (*field).to_owned(),
            offset,
        })
        .collect())
}

fn write_if_changed(path: &Path, text: &str) -> anyhow::Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The committed facts of releases not regenerated, plus the fresh ones.
fn merge(
    committed: &OffsetsDb,
    regenerated: &[String],
    fresh: Vec<Fact>,
) -> anyhow::Result<OffsetsDb> {
    let kept = committed
        .facts()
        .into_iter()
        .filter(|f| !regenerated.contains(&f.go_version));
    OffsetsDb::from_facts(kept.chain(fresh)).context("merging offsets")
}

/// Fails, listing every difference, unless `fresh` equals the committed facts of `versions`.
fn check(committed: &OffsetsDb, versions: &[String], fresh: &[Fact]) -> anyhow::Result<()> {
    let fresh = OffsetsDb::from_facts(fresh.iter().cloned()).context("generated facts")?;
    let line = |f: &Fact| {
        let o = f.offset.map_or_else(|| "-".to_owned(), |o| o.to_string());
        format!(
            "{} {} {}.{} {o}",
            f.go_version, f.goarch, f.type_name, f.field
        )
    };
    let old: BTreeSet<String> = committed
        .facts()
        .iter()
        .filter(|f| versions.contains(&f.go_version))
        .map(line)
        .collect();
    let new: BTreeSet<String> = fresh.facts().iter().map(line).collect();
    if old == new {
        return Ok(());
    }
    let mut diff = Vec::new();
    diff.extend(old.difference(&new).map(|l| format!("- {l}")));
    diff.extend(new.difference(&old).map(|l| format!("+ {l}")));
    bail!(
        "{DB_PATH} is out of date for {} (run `cargo xtask offsets --versions {}`):\n{}",
        versions.join(", "),
        versions.join(","),
        diff.join("\n")
    )
}

/// Where `cargo xtask offsets` keeps its builds.
pub fn work_dir() -> anyhow::Result<PathBuf> {
    Ok(repo_root()?.join("target/offsets-work"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_keeps_releases_from_go1_21_for_linux_amd64() {
        let listing = "v0.0.1-go1.20.14.linux-amd64 v0.0.1-go1.21.0.linux-amd64 \
            v0.0.1-go1.21rc2.linux-amd64 v0.0.1-go1.22.0.darwin-arm64 v0.0.1-go1.21.13.linux-amd64 \
            v0.0.1-go1.21.6.linux-amd64 v0.0.1-go1.23beta1.linux-amd64 v0.0.1-go1.27.4.linux-amd64\n";
        assert_eq!(
            releases_from_listing(listing),
            ["go1.21.0", "go1.21.6", "go1.21.13", "go1.27.4"]
        );
    }

    #[test]
    fn schedule_spans_every_minor_first() {
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            schedule(&v(&[
                "go1.21.0",
                "go1.21.13",
                "go1.22.0",
                "go1.21.6",
                "go1.22.5"
            ])),
            v(&["go1.21.13", "go1.22.5", "go1.22.0", "go1.21.6", "go1.21.0"])
        );
    }

    #[test]
    fn version_lists() {
        assert_eq!(
            parse_list("1.23.0, go1.22.10,go1.22.3").unwrap(),
            ["go1.22.3", "go1.22.10", "go1.23.0"]
        );
        assert!(parse_list("go1.22").is_err());
        assert!(parse_list("go1.22rc1").is_err());
    }

    #[test]
    fn merge_replaces_only_regenerated_releases() {
        let committed = OffsetsDb::parse(
            "go1.22.3\tamd64\truntime.g\tgoid\t152\ngo1.23.0\tamd64\truntime.g\tgoid\t152\n",
        )
        .unwrap();
        let fresh = vec![Fact {
            go_version: "go1.23.0".into(),
            goarch: "amd64".into(),
            type_name: "runtime.g".into(),
            field: "goid".into(),
            offset: Some(160),
        }];
        let merged = merge(&committed, &["go1.23.0".into()], fresh.clone()).unwrap();
        assert_eq!(
            merged.lookup("go1.22.3", gobin::Arch::X86_64, "runtime.g", "goid"),
            gobin::Lookup::Found(152)
        );
        assert_eq!(
            merged.lookup("go1.23.0", gobin::Arch::X86_64, "runtime.g", "goid"),
            gobin::Lookup::Found(160)
        );
        let err = check(&committed, &["go1.23.0".into()], &fresh).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("- go1.23.0 amd64 runtime.g.goid 152"), "{msg}");
        assert!(msg.contains("+ go1.23.0 amd64 runtime.g.goid 160"), "{msg}");
    }

    /// `cargo xtask offsets --check` for the machine's go: the committed database matches
    /// what that release's DWARF says, on every architecture.
    #[test]
    fn committed_database_matches_the_machines_go() {
        let version = local_go_version().unwrap();
        let facts = generate(
            &work_dir().unwrap(),
            std::slice::from_ref(&version),
            1,
            &|_| Ok(()),
        )
        .unwrap();
        assert_eq!(facts.len(), STD_FIELDS.len() * GOARCHES.len());
        let text = std::fs::read_to_string(repo_root().unwrap().join(DB_PATH)).unwrap();
        let committed = OffsetsDb::parse(&text).unwrap();
        check(&committed, &[version], &facts).unwrap();
    }
}

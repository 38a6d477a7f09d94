//! `cargo run --release -p gobin --example inspect -- BINARY [SYMBOL...]`
//!
//! Prints what gobin sees in a Go binary, with timings: a manual check and a quick way to
//! measure inspection cost on large binaries.

use std::path::PathBuf;
use std::time::Instant;

use gobin::GoBinary;

/// The agent's six fields plus one that no binary has, so the DWARF walk is always a
/// full one (the worst case).
const FIELDS: [(&str, &str); 7] = [
    ("net/http.Request", "Method"),
    ("net/http.Request", "URL"),
    ("runtime.g", "goid"),
    ("net/url.URL", "Path"),
    ("net/http.response", "status"),
    ("net/http.Request", "Header"),
    ("skyhook/absent.Type", "Field"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let path = PathBuf::from(args.next().ok_or("usage: inspect BINARY [SYMBOL...]")?);
    let symbols: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();

    let start = Instant::now();
    let bin = GoBinary::open(&path)?;
    println!("open: {:?}", start.elapsed());
    println!("arch: {:?}  mode: {:?}", bin.arch(), bin.build_mode());
    let info = bin.build_info();
    println!(
        "go: {}  main: {:?} {:?}  deps: {}  register abi: {}",
        info.go_version,
        info.main_path,
        info.main_version,
        info.deps.len(),
        match bin.require_register_abi() {
            Ok(()) => "yes".to_owned(),
            Err(e) => e.to_string(),
        }
    );

    let t = Instant::now();
    for name in if symbols.is_empty() {
        vec!["net/http.serverHandler.ServeHTTP".to_owned()]
    } else {
        symbols
    } {
        match bin.function(&name) {
            Some(f) => {
                let rets = bin.ret_sites(&f)?;
                println!(
                    "{name}: {:#x}+{} file offset {:?} rets {:x?}",
                    f.address,
                    f.size,
                    bin.file_offset(f.address),
                    rets
                );
            }
            None => println!("{name}: not found"),
        }
    }
    println!("symbols: {:?}", t.elapsed());

    let t = Instant::now();
    match bin.struct_field_offsets(&FIELDS) {
        Ok(offsets) => {
            for ((ty, field), off) in FIELDS.iter().zip(offsets) {
                println!("{ty}.{field}: {off:?}");
            }
        }
        Err(e) => println!("offsets: {e}"),
    }
    println!("dwarf: {:?}  total: {:?}", t.elapsed(), start.elapsed());
    Ok(())
}

//! `skyhook inspect PATH`: what the agent knows about a Go binary without attaching to it.
use std::{io::Write as _, path::PathBuf};

use gobin::{Arch, GoBinary};
use serde_json::{Value, json};

use crate::{
    export::console::Format,
    probes::{
        catalog,
        plan::{self, ProbePlan},
    },
};

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The Go executable to inspect.
    pub path: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    // gobin's errors already name the file.
    let bin = GoBinary::open(&args.path)?;
    let plans: Vec<ProbePlan> = catalog::ALL.iter().map(|p| plan::plan(&bin, p)).collect();
    let report = report(&bin, &plans);
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        Format::Text => write_text(&mut out, &report)?,
    }
    Ok(())
}

fn arch_name(a: Arch) -> String {
    match a {
        Arch::X86_64 => "x86_64".into(),
        Arch::Aarch64 => "aarch64".into(),
        Arch::Other(m) => format!("ELF machine {m}"),
    }
}

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

/// The whole report as JSON; the text form is rendered from it, so both say the same.
pub fn report(bin: &GoBinary, plans: &[ProbePlan]) -> Value {
    let info = bin.build_info();
    let mode = bin.build_mode();
    json!({
        "path": bin.path().display().to_string(),
        "arch": arch_name(bin.arch()),
        "goVersion": info.go_version,
        "mainModule": {"path": info.main_path, "version": info.main_version},
        "buildMode": {
            "pie": mode.pie,
            "static": mode.static_linked,
            "stripped": mode.stripped,
            "dwarf": mode.has_dwarf,
        },
        "dependencies": info.deps.iter().map(|m| json!({"path": m.path, "version": m.version})).collect::<Vec<_>>(),
        "probes": plans.iter().map(probe_json).collect::<Vec<_>>(),
    })
}

fn probe_json(p: &ProbePlan) -> Value {
    let (func, source) = match &p.function {
        Some((f, s)) => (Some(f), Some(s.as_str())),
        None => (None, None),
    };
    json!({
        "name": p.probe.name,
        "symbol": p.probe.symbol,
        "address": func.map(|f| hex(f.address)),
        "size": func.map(|f| f.size),
        "symbolSource": source,
        "entryOffset": p.entry.map(hex),
        "returnOffsets": p.returns.iter().map(|(_, off)| hex(*off)).collect::<Vec<_>>(),
        "returnAddresses": p.returns.iter().map(|(va, _)| hex(*va)).collect::<Vec<_>>(),
        "fields": p.fields.iter().map(|f| json!({
            "type": f.field.type_name,
            "field": f.field.field,
            "required": f.field.required,
            "offset": f.offset,
            "source": f.source.map(|s| s.as_str()),
            "reason": f.reason,
        })).collect::<Vec<_>>(),
        "attachable": p.blocker.is_none(),
        "reason": p.blocker.as_ref().map(|b| b.to_string()),
    })
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn write_text(out: &mut impl std::io::Write, r: &Value) -> std::io::Result<()> {
    let bm = &r["buildMode"];
    let yes = |k: &str, y: &str, n: &str| {
        if bm[k] == true {
            y.to_string()
        } else {
            n.to_string()
        }
    };
    writeln!(out, "{}", s(&r["path"]))?;
    writeln!(out, "  arch         {}", s(&r["arch"]))?;
    writeln!(out, "  go           {}", s(&r["goVersion"]))?;
    writeln!(
        out,
        "  main module  {} {}",
        s(&r["mainModule"]["path"]),
        s(&r["mainModule"]["version"])
    )?;
    writeln!(
        out,
        "  build        {}, {}, {}, {}",
        yes("static", "static", "dynamic"),
        yes("pie", "PIE", "not PIE"),
        yes("stripped", "stripped", "symbols"),
        yes("dwarf", "DWARF", "no DWARF"),
    )?;
    let deps = r["dependencies"].as_array().cloned().unwrap_or_default();
    writeln!(out, "  modules      {}", deps.len())?;
    for d in &deps {
        writeln!(out, "    {} {}", s(&d["path"]), s(&d["version"]))?;
    }
    writeln!(out, "  probes")?;
    for p in r["probes"].as_array().cloned().unwrap_or_default() {
        let verdict = if p["attachable"] == true {
            "attachable".to_string()
        } else {
            format!("NOT attachable: {}", s(&p["reason"]))
        };
        writeln!(
            out,
            "    {}  ({})  {}",
            s(&p["name"]),
            s(&p["symbol"]),
            verdict
        )?;
        writeln!(
            out,
            "      function  {} size {} from {}",
            s(&p["address"]),
            s(&p["size"]),
            s(&p["symbolSource"])
        )?;
        let rets: Vec<String> = p["returnOffsets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(s)
            .collect();
        writeln!(
            out,
            "      uprobes   entry {}, {} RET site(s) {}",
            s(&p["entryOffset"]),
            rets.len(),
            rets.join(" ")
        )?;
        for f in p["fields"].as_array().cloned().unwrap_or_default() {
            let name = format!("{}.{}", s(&f["type"]), s(&f["field"]));
            match f["offset"].as_u64() {
                Some(o) => writeln!(
                    out,
                    "      field     {name:<32} {o:>4}  {}",
                    s(&f["source"])
                )?,
                None => writeln!(
                    out,
                    "      field     {name:<32}    ?  {}{}",
                    if f["required"] == true {
                        "required, "
                    } else {
                        "optional, "
                    },
                    s(&f["reason"])
                )?,
            }
        }
    }
    Ok(())
}

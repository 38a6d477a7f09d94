//! Where a catalog probe goes in one binary: the function (from `.symtab` or `.gopclntab`),
//! its entry and RET sites as uprobe file offsets, and every struct field it reads (from
//! DWARF or the offsets database). `attach` acts on a plan; `skyhook inspect` prints it.
use gobin::{Function, GoBinary, OffsetSource, SymbolSource};

use super::catalog::{Field, FunctionProbe};

/// One field a probe reads, as resolved in this binary.
#[derive(Clone, Debug)]
pub struct FieldPlan {
    pub field: Field,
    pub offset: Option<u64>,
    pub source: Option<OffsetSource>,
    /// Why the offset is unknown.
    pub reason: Option<String>,
}

/// Why a probe cannot be attached to a binary.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Blocker {
    #[error("built for {binary}; this agent traces {host} programs")]
    Arch { binary: String, host: &'static str },
    #[error("Go {version} predates the register ABI (Go 1.17) that the probes read arguments by")]
    GoTooOld { version: String },
    #[error("does not use {probe}: symbol {symbol} not found")]
    SymbolMissing {
        probe: &'static str,
        symbol: &'static str,
    },
    #[error("{probe}: the binary has no symbol table and its function table is unreadable: {why}")]
    Unreadable { probe: &'static str, why: String },
    #[error("{probe}: cannot find the RET instructions of {symbol}: {why}")]
    ReturnSites {
        probe: &'static str,
        symbol: &'static str,
        why: String,
    },
    #[error("{probe}: address {vaddr:#x} of {symbol} is not in a loadable segment")]
    NotMapped {
        probe: &'static str,
        symbol: &'static str,
        vaddr: u64,
    },
    #[error("{probe}: offset of {type_name}.{field} is unknown ({why})")]
    FieldUnknown {
        probe: &'static str,
        type_name: &'static str,
        field: &'static str,
        why: String,
    },
}

#[derive(Clone, Debug)]
pub struct ProbePlan {
    pub probe: &'static FunctionProbe,
    pub function: Option<(Function, SymbolSource)>,
    /// File offset of the function's first instruction.
    pub entry: Option<u64>,
    /// Virtual addresses and file offsets of every RET instruction.
    pub returns: Vec<(u64, u64)>,
    pub fields: Vec<FieldPlan>,
    /// The first reason the probe cannot be attached; `None` means attachable.
    pub blocker: Option<Blocker>,
}

impl ProbePlan {
    /// The offset of `f`, when known.
    pub fn offset(&self, f: &Field) -> Option<u64> {
        self.fields
            .iter()
            .find(|p| p.field.type_name == f.type_name && p.field.field == f.field)
            .and_then(|p| p.offset)
    }

    /// Where the field offsets came from, for logs: `dwarf`, `offsets-db`, both or none.
    pub fn offsets_source(&self) -> &'static str {
        let dwarf = self
            .fields
            .iter()
            .any(|f| f.source == Some(OffsetSource::Dwarf));
        let db = self
            .fields
            .iter()
            .any(|f| f.source == Some(OffsetSource::OffsetsDb));
        match (dwarf, db) {
            (true, true) => "dwarf+offsets-db",
            (true, false) => "dwarf",
            (false, true) => "offsets-db",
            (false, false) => "none",
        }
    }

    pub fn return_offsets(&self) -> Vec<u64> {
        self.returns.iter().map(|(_, off)| *off).collect()
    }
}

/// Resolves `probe` in `bin`. Never fails: what is missing is recorded in the plan.
pub fn plan(bin: &GoBinary, probe: &'static FunctionProbe) -> ProbePlan {
    let mut plan = ProbePlan {
        probe,
        function: None,
        entry: None,
        returns: Vec::new(),
        fields: Vec::new(),
        blocker: None,
    };
    let block = |plan: &mut ProbePlan, b: Blocker| {
        if plan.blocker.is_none() {
            plan.blocker = Some(b);
        }
    };
    if bin.arch() != gobin::Arch::X86_64 {
        let binary = match bin.arch() {
            gobin::Arch::Aarch64 => "aarch64".to_string(),
            other => format!("{other:?}"),
        };
        block(
            &mut plan,
            Blocker::Arch {
                binary,
                host: "x86_64",
            },
        );
    }
    if bin.require_register_abi().is_err() {
        let version = bin.build_info().go_version.clone();
        block(&mut plan, Blocker::GoTooOld { version });
    }

    match bin.function_source(probe.symbol) {
        // Without a symbol table the pclntab was the only source: say why it failed, if it did.
        None => match bin.pclntab_function(probe.symbol) {
            Err(e) if bin.build_mode().stripped => block(
                &mut plan,
                Blocker::Unreadable {
                    probe: probe.name,
                    why: e.to_string(),
                },
            ),
            _ => block(
                &mut plan,
                Blocker::SymbolMissing {
                    probe: probe.name,
                    symbol: probe.symbol,
                },
            ),
        },
        Some((func, source)) => {
            let not_mapped = |vaddr| Blocker::NotMapped {
                probe: probe.name,
                symbol: probe.symbol,
                vaddr,
            };
            plan.entry = bin.file_offset(func.address);
            if plan.entry.is_none() {
                block(&mut plan, not_mapped(func.address));
            }
            // Entry-only probes need no RET sites.
            let rets = match probe.return_program {
                Some(_) => bin.ret_sites(&func),
                None => Ok(Vec::new()),
            };
            match rets {
                Ok(rets) if rets.is_empty() && probe.return_program.is_none() => {}
                Ok(rets) if rets.is_empty() => block(
                    &mut plan,
                    Blocker::ReturnSites {
                        probe: probe.name,
                        symbol: probe.symbol,
                        why: "the function has no RET instruction".into(),
                    },
                ),
                Ok(rets) => {
                    for vaddr in rets {
                        match bin.file_offset(vaddr) {
                            Some(off) => plan.returns.push((vaddr, off)),
                            None => block(&mut plan, not_mapped(vaddr)),
                        }
                    }
                }
                Err(e) => block(
                    &mut plan,
                    Blocker::ReturnSites {
                        probe: probe.name,
                        symbol: probe.symbol,
                        why: e.to_string(),
                    },
                ),
            }
            plan.function = Some((func, source));
        }
    }

    let wanted: Vec<(&str, &str)> = probe
        .fields
        .iter()
        .map(|f| (f.type_name, f.field))
        .collect();
    // DWARF first, else the embedded offsets database by exact Go release; never a guess.
    for (f, r) in probe.fields.iter().zip(bin.resolve_fields(&wanted)) {
        if r.offset.is_none() && f.required {
            block(
                &mut plan,
                Blocker::FieldUnknown {
                    probe: probe.name,
                    type_name: f.type_name,
                    field: f.field,
                    why: r.reason.clone().unwrap_or_else(|| "not found".into()),
                },
            );
        }
        plan.fields.push(FieldPlan {
            field: *f,
            offset: r.offset,
            source: r.source,
            reason: r.reason,
        });
    }
    plan
}

//! Attach: load the eBPF object once, then for each traced process resolve the catalog's
//! symbols, RET sites and struct offsets in its binary and attach the programs to it.
pub mod catalog;
pub mod plan;

use std::{collections::HashMap, num::NonZeroU32};

use agent_common::{HttpOffsets, maps as map_names};
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, RingBuf},
    programs::{UProbe, uprobe::UProbeLinkId, uprobe::UProbeScope},
};
use gobin::GoBinary;
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::discover::Target;

/// The eBPF object built from `agent-ebpf` by build.rs.
static PROBES_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/skyhook-probes"));

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("loading the eBPF programs into the kernel")]
    Load(#[source] aya::EbpfError),
    #[error("eBPF program {name} is missing from the object")]
    MissingProgram { name: &'static str },
    #[error("eBPF map {name} is missing from the object")]
    MissingMap { name: &'static str },
    #[error("eBPF program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("process {pid} ({exe}) is not a Go program we can read")]
    Binary {
        pid: u32,
        exe: String,
        #[source]
        source: gobin::Error,
    },
    #[error("process {pid} ({exe}) {blocker}")]
    NotAttachable {
        pid: u32,
        exe: String,
        blocker: plan::Blocker,
    },
}

/// What was attached to one process; detached when dropped from [`Probes`].
#[derive(Debug)]
pub struct AttachedProcess {
    pub pid: u32,
    pub go_version: String,
    links: Vec<(&'static str, UProbeLinkId)>,
    pub status_readable: bool,
    /// Names of the catalog probes attached.
    pub probes: Vec<&'static str>,
}

/// The loaded eBPF object and everything attached from it.
pub struct Probes {
    ebpf: Ebpf,
    attached: HashMap<u32, AttachedProcess>,
}

impl Probes {
    /// Loads and verifies every program once; attaching comes per process.
    pub fn load() -> Result<Probes, ProbeError> {
        let mut ebpf = Ebpf::load(PROBES_OBJECT).map_err(ProbeError::Load)?;
        for name in catalog::ALL
            .iter()
            .flat_map(|p| p.entry_program.into_iter().chain(p.return_program))
        {
            let prog: &mut UProbe = ebpf
                .program_mut(name)
                .ok_or(ProbeError::MissingProgram { name })?
                .try_into()
                .map_err(|source| ProbeError::Program { name, source })?;
            prog.load()
                .map_err(|source| ProbeError::Program { name, source })?;
        }
        Ok(Probes {
            ebpf,
            attached: HashMap::new(),
        })
    }

    /// The ring the programs write into; the collect stage owns it from here on.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let name = map_names::EVENTS;
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(ProbeError::MissingMap { name })?;
        RingBuf::try_from(map).map_err(|source| ProbeError::Map { name, source })
    }

    /// Resolves every catalog probe in the target's binary and attaches those that can be,
    /// scoped to this one process. Fails, attaching nothing, when no span-making probe can.
    pub fn attach(&mut self, target: &Target) -> Result<&AttachedProcess, ProbeError> {
        let pid = target.pid;
        let exe = target.exe_name.display().to_string();
        let bin = GoBinary::open(&target.exe_path).map_err(|source| ProbeError::Binary {
            pid,
            exe: exe.clone(),
            source,
        })?;
        let plans: Vec<plan::ProbePlan> =
            catalog::ALL.iter().map(|p| plan::plan(&bin, p)).collect();
        if !plans
            .iter()
            .any(|p| p.probe.makes_spans && p.blocker.is_none())
        {
            // Report why the first (server) probe cannot attach: the most telling reason.
            let blocker = plans.iter().find_map(|p| p.blocker.clone());
            return Err(match blocker {
                Some(blocker) => ProbeError::NotAttachable { pid, exe, blocker },
                None => ProbeError::MissingProgram {
                    name: "any span-making probe",
                },
            });
        }
        let usable: Vec<&plan::ProbePlan> = plans.iter().filter(|p| p.blocker.is_none()).collect();
        for p in plans.iter() {
            if let Some(b) = &p.blocker {
                warn!(pid, exe, probe = p.probe.name, reason = %b, "probe not attached");
            }
            for f in p
                .fields
                .iter()
                .filter(|f| f.offset.is_none() && p.blocker.is_none())
            {
                warn!(
                    pid,
                    exe,
                    probe = p.probe.name,
                    field = %format!("{}.{}", f.field.type_name, f.field.field),
                    why = f.reason.as_deref().unwrap_or(""),
                    "optional field unknown"
                );
            }
        }
        // A field's offset is the same whichever probe asked for it.
        let off = |f: &catalog::Field| usable.iter().find_map(|p| p.offset(f));
        let server = usable
            .iter()
            .any(|p| p.probe.name == catalog::HTTP_SERVER.name);
        let response_status = off(&catalog::RESPONSE_STATUS);
        let proto_major = off(&catalog::REQUEST_PROTO_MAJOR);
        let status_readable = server && response_status.is_some() && proto_major.is_some();
        if server && !status_readable {
            warn!(
                pid,
                exe,
                "server status codes cannot be read in this binary: offsets of net/http.response.status or net/http.Request.ProtoMajor unknown"
            );
        }
        let client_status = off(&catalog::RESPONSE_STATUS_CODE);
        let offsets = HttpOffsets {
            g_goid: off(&catalog::G_GOID).unwrap_or(0),
            request_method: off(&catalog::REQUEST_METHOD).unwrap_or(0),
            request_url: off(&catalog::REQUEST_URL).unwrap_or(0),
            request_host: off(&catalog::REQUEST_HOST).unwrap_or(0),
            url_path: off(&catalog::URL_PATH).unwrap_or(0),
            url_host: off(&catalog::URL_HOST).unwrap_or(0),
            request_proto_major: proto_major.unwrap_or(0),
            response_status: response_status.unwrap_or(0),
            status_readable: u64::from(status_readable),
            client_status_code: client_status.unwrap_or(0),
            client_status_readable: u64::from(client_status.is_some()),
            g_parent_goid: off(&catalog::G_PARENT_GOID).unwrap_or(0),
        };
        {
            let name = map_names::HTTP_OFFSETS;
            let map = self
                .ebpf
                .map_mut(name)
                .ok_or(ProbeError::MissingMap { name })?;
            let mut map: BpfHashMap<_, u32, HttpOffsets> =
                BpfHashMap::try_from(map).map_err(|source| ProbeError::Map { name, source })?;
            map.insert(&pid, &offsets, 0)
                .map_err(|source| ProbeError::Map { name, source })?;
        }

        let scope = NonZeroU32::new(pid).map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess);
        let mut links = Vec::new();
        let mut attach_one = |p: &plan::ProbePlan| -> Result<(), ProbeError> {
            let entry = p
                .probe
                .entry_program
                .map(|name| (name, p.entry.into_iter().collect::<Vec<_>>()));
            let returns = p
                .probe
                .return_program
                .map(|name| (name, p.return_offsets()));
            for (name, offsets) in entry.into_iter().chain(returns) {
                let prog: &mut UProbe = self
                    .ebpf
                    .program_mut(name)
                    .ok_or(ProbeError::MissingProgram { name })?
                    .try_into()
                    .map_err(|source| ProbeError::Program { name, source })?;
                let link = prog
                    .attach(offsets.iter().copied(), &target.exe_path, scope)
                    .map_err(|source| ProbeError::Program { name, source })?;
                links.push((name, link));
            }
            Ok(())
        };
        let mut attach_result = Ok(());
        for p in &usable {
            attach_result = attach_one(p);
            if attach_result.is_err() {
                break;
            }
        }
        let attached = AttachedProcess {
            pid,
            go_version: bin.build_info().go_version.clone(),
            links,
            status_readable,
            probes: usable.iter().map(|p| p.probe.name).collect(),
        };
        if let Err(e) = attach_result {
            self.detach_process(attached);
            return Err(e);
        }
        for p in &usable {
            info!(
                pid,
                exe,
                go = attached.go_version,
                probe = p.probe.name,
                symbol = p.probe.symbol,
                symbols = p.function.as_ref().map_or("none", |(_, s)| s.as_str()),
                return_sites = p.returns.len(),
                offsets = p.offsets_source(),
                "attached"
            );
        }
        Ok(self.attached.entry(pid).insert_entry(attached).into_mut())
    }

    /// Detaches everything attached to `pid` and forgets its offsets.
    pub fn detach(&mut self, pid: u32) {
        if let Some(p) = self.attached.remove(&pid) {
            self.detach_process(p);
        }
    }

    /// Detaches every process.
    pub fn detach_all(&mut self) {
        let pids: Vec<u32> = self.attached.keys().copied().collect();
        for pid in pids {
            self.detach(pid);
        }
    }

    pub fn attached_pids(&self) -> Vec<u32> {
        self.attached.keys().copied().collect()
    }

    fn detach_process(&mut self, p: AttachedProcess) {
        for (name, link) in p.links {
            let prog: Option<&mut UProbe> =
                self.ebpf.program_mut(name).and_then(|p| p.try_into().ok());
            if let Some(prog) = prog
                && let Err(e) = prog.detach(link)
            {
                debug!(pid = p.pid, program = name, error = %e, "detach");
            }
        }
        let name = map_names::HTTP_OFFSETS;
        if let Some(map) = self.ebpf.map_mut(name)
            && let Ok(mut map) = BpfHashMap::<_, u32, HttpOffsets>::try_from(map)
        {
            let _ = map.remove(&p.pid);
        }
        debug!(pid = p.pid, "detached");
    }
}

#[cfg(test)]
mod tests {
    /// Stripped binaries are resolved through the offsets database, which records only
    /// `gobin::offsets::STD_FIELDS`: every catalog field must be one of them.
    #[test]
    fn catalog_fields_are_in_the_offsets_database() {
        for f in super::catalog::ALL.iter().flat_map(|p| p.fields) {
            assert!(
                gobin::offsets::STD_FIELDS.contains(&(f.type_name, f.field)),
                "{}.{} is missing from gobin::offsets::STD_FIELDS",
                f.type_name,
                f.field
            );
        }
    }
}

//! Attach: load the eBPF object once, then for each traced process resolve the catalog's
//! symbols, RET sites and struct offsets in its binary and attach the programs to it.
pub mod catalog;
pub mod plan;

use std::{collections::HashMap, num::NonZeroU32};

use agent_common::{HttpServerOffsets, maps as map_names};
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
        for name in [
            catalog::HTTP_SERVER.entry_program,
            catalog::HTTP_SERVER.return_program,
        ] {
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

    /// Resolves the net/http server probe in the target's binary and attaches it, scoped to
    /// this one process.
    pub fn attach(&mut self, target: &Target) -> Result<&AttachedProcess, ProbeError> {
        let pid = target.pid;
        let exe = target.exe_name.display().to_string();
        let bin = GoBinary::open(&target.exe_path).map_err(|source| ProbeError::Binary {
            pid,
            exe: exe.clone(),
            source,
        })?;
        let spec = &catalog::HTTP_SERVER;
        let plan = plan::plan(&bin, spec);
        if let Some(blocker) = plan.blocker.clone() {
            return Err(ProbeError::NotAttachable { pid, exe, blocker });
        }
        for f in plan.fields.iter().filter(|f| f.offset.is_none()) {
            warn!(
                pid,
                exe,
                probe = spec.name,
                field = %format!("{}.{}", f.field.type_name, f.field.field),
                why = f.reason.as_deref().unwrap_or(""),
                "optional field unknown"
            );
        }
        let off = |f: &catalog::Field| plan.offset(f);
        let response_status = off(&catalog::RESPONSE_STATUS);
        let proto_major = off(&catalog::REQUEST_PROTO_MAJOR);
        let status_readable = response_status.is_some() && proto_major.is_some();
        if !status_readable {
            warn!(
                pid,
                exe,
                "status codes cannot be read in this binary: offsets of net/http.response.status or net/http.Request.ProtoMajor unknown"
            );
        }
        let offsets = HttpServerOffsets {
            g_goid: off(&catalog::G_GOID).unwrap_or(0),
            request_method: off(&catalog::REQUEST_METHOD).unwrap_or(0),
            request_url: off(&catalog::REQUEST_URL).unwrap_or(0),
            request_host: off(&catalog::REQUEST_HOST).unwrap_or(0),
            url_path: off(&catalog::URL_PATH).unwrap_or(0),
            request_proto_major: proto_major.unwrap_or(0),
            response_status: response_status.unwrap_or(0),
            status_readable: u64::from(status_readable),
        };
        {
            let name = map_names::HTTP_SERVER_OFFSETS;
            let map = self
                .ebpf
                .map_mut(name)
                .ok_or(ProbeError::MissingMap { name })?;
            let mut map: BpfHashMap<_, u32, HttpServerOffsets> =
                BpfHashMap::try_from(map).map_err(|source| ProbeError::Map { name, source })?;
            map.insert(&pid, &offsets, 0)
                .map_err(|source| ProbeError::Map { name, source })?;
        }

        let scope = NonZeroU32::new(pid).map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess);
        let mut links = Vec::new();
        let attach_result = (|| {
            for (name, offsets) in [
                (
                    spec.entry_program,
                    plan.entry.into_iter().collect::<Vec<_>>(),
                ),
                (spec.return_program, plan.return_offsets()),
            ] {
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
        })();
        let attached = AttachedProcess {
            pid,
            go_version: bin.build_info().go_version.clone(),
            links,
            status_readable,
        };
        if let Err(e) = attach_result {
            self.detach_process(attached);
            return Err(e);
        }
        info!(
            pid,
            exe,
            go = attached.go_version,
            probe = spec.name,
            symbol = spec.symbol,
            symbols = plan.function.as_ref().map_or("none", |(_, s)| s.as_str()),
            return_sites = plan.returns.len(),
            offsets = plan.offsets_source(),
            "attached"
        );
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
        let name = map_names::HTTP_SERVER_OFFSETS;
        if let Some(map) = self.ebpf.map_mut(name)
            && let Ok(mut map) = BpfHashMap::<_, u32, HttpServerOffsets>::try_from(map)
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
        for f in super::catalog::HTTP_SERVER.fields {
            assert!(
                gobin::offsets::STD_FIELDS.contains(&(f.type_name, f.field)),
                "{}.{} is missing from gobin::offsets::STD_FIELDS",
                f.type_name,
                f.field
            );
        }
    }
}

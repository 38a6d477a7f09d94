//! Which processes to trace and what to call them. For now the operator names them by pid;
//! scanning `/proc` and following execs arrives with the DaemonSet work.
use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DiscoverError {
    #[error("process {pid} does not exist")]
    NoSuchProcess { pid: u32 },
    #[error("cannot read the executable of process {pid}")]
    Executable {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// A process chosen for tracing, with the names it reports under.
#[derive(Clone, Debug)]
pub struct Target {
    pub pid: u32,
    /// The executable as the process sees it (`/proc/PID/exe` resolved), for messages.
    pub exe_name: PathBuf,
    /// A path that reaches the executable from the agent's mount namespace.
    pub exe_path: PathBuf,
    pub service: String,
    pub instance: String,
}

/// How a target is named when the operator does not say.
#[derive(Clone, Debug, Default)]
pub struct Naming {
    pub service: Option<String>,
    pub instance: Option<String>,
}

impl Target {
    /// Looks the process up and names it: service from `--service`, else the process's
    /// `SW_AGENT_NAME`, else the executable's file name; instance from `--instance`, else
    /// `<hostname>@<pid>`.
    pub fn from_pid(pid: u32, naming: &Naming) -> Result<Target, DiscoverError> {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        if pid == 0 || !proc_dir.exists() {
            return Err(DiscoverError::NoSuchProcess { pid });
        }
        let exe_path = proc_dir.join("exe");
        let exe_name = std::fs::read_link(&exe_path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                DiscoverError::NoSuchProcess { pid }
            } else {
                DiscoverError::Executable { pid, source }
            }
        })?;
        let env_name = process_env(pid, "SW_AGENT_NAME").filter(|s| !s.is_empty());
        let file_name = exe_name
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_string()
            })
            .unwrap_or_else(|| format!("pid-{pid}"));
        let service = naming.service.clone().or(env_name).unwrap_or(file_name);
        let instance = naming
            .instance
            .clone()
            .unwrap_or_else(|| format!("{}@{pid}", hostname()));
        Ok(Target {
            pid,
            exe_name,
            exe_path,
            service,
            instance,
        })
    }

    /// Whether the process is still running (its `/proc` entry exists and is not a zombie).
    pub fn is_alive(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            // The state is the first field after the parenthesised command name.
            Ok(stat) => stat
                .rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
                .unwrap_or(false),
            Err(_) => false,
        }
    }
}

/// One variable of a process's initial environment, if readable.
pub fn process_env(pid: u32, key: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|b| *b == 0).find_map(|kv| {
        let kv = std::str::from_utf8(kv).ok()?;
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_this_process() {
        let pid = std::process::id();
        let t = Target::from_pid(pid, &Naming::default()).unwrap();
        assert_eq!(t.instance, format!("{}@{pid}", hostname()));
        assert!(t.is_alive());
        let named = Target::from_pid(
            pid,
            &Naming {
                service: Some("svc".into()),
                instance: Some("i-1".into()),
            },
        )
        .unwrap();
        assert_eq!(
            (named.service.as_str(), named.instance.as_str()),
            ("svc", "i-1")
        );
    }

    #[test]
    fn missing_process_is_a_clear_error() {
        let err = Target::from_pid(u32::MAX - 1, &Naming::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("process {} does not exist", u32::MAX - 1)
        );
    }
}

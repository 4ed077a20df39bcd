//! Pod and container cgroups, on the unified hierarchy (v2) when it has the
//! cpu and memory controllers, else on the v1 cpu and memory hierarchies.
//!
//! Layout, relative to each hierarchy's root: `<parent>/pod-<sandbox id>`
//! (pod-level limits) and `<parent>/pod-<sandbox id>/<container id>`
//! (container limits, OOM accounting, kill-all).

use crate::types::{CgroupInfo, CgroupVersion, Resources};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// CFS period used for cpu limits (the kubelet's default).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Which cgroups to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupMode {
    /// v2 if the unified hierarchy has cpu and memory, else v1; disabled
    /// (with a warning) if neither can be written.
    Auto,
    /// No cgroups: limits are not enforced.
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupConfig {
    pub mode: CgroupMode,
    /// Name of the parent cgroup under each hierarchy root.
    pub parent: String,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        CgroupConfig {
            mode: CgroupMode::Auto,
            parent: "navarch".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Hierarchy {
    V2 { root: PathBuf },
    V1 { cpu: PathBuf, memory: PathBuf },
}

impl Hierarchy {
    fn version(&self) -> CgroupVersion {
        match self {
            Hierarchy::V2 { .. } => CgroupVersion::V2,
            Hierarchy::V1 { .. } => CgroupVersion::V1,
        }
    }
}

/// The cgroup hierarchies in use, or why there are none.
#[derive(Debug, Clone)]
pub struct Cgroups {
    hierarchy: Result<Hierarchy, String>,
    parent: String,
}

impl Cgroups {
    /// Finds the hierarchies from `/proc/self/mountinfo` and checks that
    /// the parent cgroup can be created.
    pub fn detect(config: &CgroupConfig) -> Self {
        let hierarchy = match config.mode {
            CgroupMode::Disabled => Err("cgroups disabled by configuration".to_owned()),
            CgroupMode::Auto => fs::read_to_string("/proc/self/mountinfo")
                .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))
                .and_then(|m| find_hierarchy(&m))
                .and_then(|h| {
                    let c = Cgroups {
                        hierarchy: Ok(h.clone()),
                        parent: config.parent.clone(),
                    };
                    c.ensure(Path::new(""))
                        .map(|_| h)
                        .map_err(|e| format!("cannot create the {:?} cgroup: {e}", config.parent))
                }),
        };
        if let Err(reason) = &hierarchy {
            tracing::warn!(%reason, "cgroups unavailable: cpu and memory limits will not be enforced");
        }
        Cgroups {
            hierarchy,
            parent: config.parent.clone(),
        }
    }

    pub fn version(&self) -> Option<CgroupVersion> {
        self.hierarchy.as_ref().ok().map(Hierarchy::version)
    }

    /// `<parent>/<rel>`, the path reported in statuses.
    pub fn rel_path(&self, rel: &str) -> String {
        format!("{}/{rel}", self.parent)
    }

    pub fn info(&self, rel: &str) -> CgroupInfo {
        match &self.hierarchy {
            Ok(h) => CgroupInfo::Enabled {
                version: h.version(),
                path: self.rel_path(rel),
            },
            Err(reason) => CgroupInfo::Disabled {
                reason: reason.clone(),
            },
        }
    }

    /// The handle of `<parent>/<rel>`, without touching the filesystem.
    pub fn handle(&self, rel: &str) -> Option<CgroupHandle> {
        let rel = Path::new(&self.parent).join(rel);
        match self.hierarchy.as_ref().ok()? {
            Hierarchy::V2 { root } => Some(CgroupHandle {
                version: CgroupVersion::V2,
                dirs: vec![root.join(&rel)],
            }),
            Hierarchy::V1 { cpu, memory } => Some(CgroupHandle {
                version: CgroupVersion::V1,
                // Memory first: it is the one OOM accounting reads.
                dirs: vec![memory.join(&rel), cpu.join(&rel)],
            }),
        }
    }

    /// Creates `<parent>/<rel>` (and its ancestors) with these limits.
    /// `Ok(None)` when cgroups are unavailable.
    pub fn create(&self, rel: &str, res: &Resources) -> io::Result<Option<CgroupHandle>> {
        if self.hierarchy.is_err() {
            return Ok(None);
        }
        self.ensure(Path::new(rel))?;
        let h = self.handle(rel).expect("hierarchy checked");
        h.set_limits(res)?;
        Ok(Some(h))
    }

    fn ensure(&self, rel: &Path) -> io::Result<()> {
        let full = Path::new(&self.parent).join(rel);
        match self
            .hierarchy
            .as_ref()
            .map_err(|r| io::Error::other(r.clone()))?
        {
            Hierarchy::V2 { root } => {
                // Each level must delegate cpu and memory to its children.
                let mut dir = root.clone();
                enable_controllers(&dir)?;
                for comp in full.components() {
                    dir.push(comp);
                    mkdir(&dir)?;
                    if dir != root.join(&full) {
                        enable_controllers(&dir)?;
                    }
                }
                Ok(())
            }
            Hierarchy::V1 { cpu, memory } => {
                fs::create_dir_all(memory.join(&full))?;
                fs::create_dir_all(cpu.join(&full))?;
                Ok(())
            }
        }
    }
}

fn mkdir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

fn enable_controllers(dir: &Path) -> io::Result<()> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&file)?;
    for c in ["cpu", "memory"] {
        if !enabled.split_whitespace().any(|e| e == c) {
            fs::write(&file, format!("+{c}"))?;
        }
    }
    Ok(())
}

/// Picks the hierarchy from mountinfo text.
fn find_hierarchy(mountinfo: &str) -> Result<Hierarchy, String> {
    let mut v1_cpu = None;
    let mut v1_memory = None;
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = pre.split(' ').nth(4).unwrap_or_default();
        let mut post = post.split(' ');
        let fstype = post.next().unwrap_or_default();
        let super_opts = post.nth(1).unwrap_or_default();
        match fstype {
            "cgroup2" => {
                let root = PathBuf::from(mount_point);
                let controllers =
                    fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
                let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
                if has("cpu") && has("memory") {
                    return Ok(Hierarchy::V2 { root });
                }
            }
            "cgroup" => {
                let opts: Vec<&str> = super_opts.split(',').collect();
                if opts.contains(&"cpu") && v1_cpu.is_none() {
                    v1_cpu = Some(PathBuf::from(mount_point));
                }
                if opts.contains(&"memory") && v1_memory.is_none() {
                    v1_memory = Some(PathBuf::from(mount_point));
                }
            }
            _ => {}
        }
    }
    match (v1_cpu, v1_memory) {
        (Some(cpu), Some(memory)) => Ok(Hierarchy::V1 { cpu, memory }),
        _ => Err("no cgroup v2 hierarchy with cpu and memory, and no cgroup v1 cpu and memory hierarchies".into()),
    }
}

/// One cgroup, in one (v2) or two (v1: memory, cpu) hierarchies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupHandle {
    pub version: CgroupVersion,
    /// v2: the cgroup directory; v1: memory then cpu directories.
    pub dirs: Vec<PathBuf>,
}

impl CgroupHandle {
    /// The `cgroup.procs` files a process writes itself into.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    fn memory_dir(&self) -> &Path {
        &self.dirs[0]
    }

    fn cpu_dir(&self) -> &Path {
        self.dirs.last().expect("at least one dir")
    }

    fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
        let path = dir.join(file);
        fs::write(&path, value).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("write {value:?} to {}: {e}", path.display()),
            )
        })
    }

    /// Writes the cpu and memory limits (unset ones are "max").
    pub fn set_limits(&self, res: &Resources) -> io::Result<()> {
        let files = limit_files(self.version, res);
        for (file, value) in files {
            let dir = if file.starts_with("memory") {
                self.memory_dir()
            } else {
                self.cpu_dir()
            };
            match Self::write(dir, file, &value) {
                // Optional knobs (swap accounting off, no cfs burst…).
                Err(e) if file == "memory.swap.max" && e.kind() == io::ErrorKind::NotFound => {}
                r => r?,
            }
        }
        Ok(())
    }

    /// OOM kills seen in this cgroup so far (v2 `memory.events`, v1
    /// `memory.oom_control`), `None` if the kernel does not count them.
    pub fn oom_kills(&self) -> Option<u64> {
        let (file, key) = match self.version {
            CgroupVersion::V2 => ("memory.events", "oom_kill"),
            CgroupVersion::V1 => ("memory.oom_control", "oom_kill"),
        };
        let text = fs::read_to_string(self.memory_dir().join(file)).ok()?;
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
    }

    /// Whether a process of this cgroup was OOM-killed. On v1 kernels without
    /// an `oom_kill` counter: a SIGKILL after the limit was hit.
    pub fn was_oom_killed(&self, signal: Option<i32>) -> bool {
        match self.oom_kills() {
            Some(n) => n > 0,
            None => {
                let failcnt = fs::read_to_string(self.memory_dir().join("memory.failcnt"))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .unwrap_or(0);
                signal == Some(nix::libc::SIGKILL) && failcnt > 0
            }
        }
    }

    /// Pids of the processes in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = Vec::new();
        for f in self.procs_files() {
            if let Ok(s) = fs::read_to_string(f) {
                pids.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs every process in the cgroup.
    pub fn kill_all(&self) {
        if self.version == CgroupVersion::V2
            && Self::write(&self.dirs[0], "cgroup.kill", "1").is_ok()
        {
            return;
        }
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// Kills what is left and removes the cgroup (retrying while the killed
    /// processes leave it).
    pub async fn remove(&self) -> io::Result<()> {
        for attempt in 0..50 {
            self.kill_all();
            let mut busy = None;
            for d in &self.dirs {
                match fs::remove_dir(d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => busy = Some(e),
                }
            }
            match busy {
                None => return Ok(()),
                Some(e) if attempt == 49 => return Err(e),
                Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        Ok(())
    }
}

/// The cgroup files and values for these limits.
pub fn limit_files(version: CgroupVersion, res: &Resources) -> Vec<(&'static str, String)> {
    let quota = res
        .cpu_limit_millis
        .map(|m| (m * CPU_PERIOD_US / 1000).max(1000));
    let shares = res
        .cpu_request_millis
        .map(|m| (m * 1024 / 1000).clamp(2, 262_144));
    let mut out = Vec::new();
    match version {
        CgroupVersion::V2 => {
            out.push((
                "cpu.max",
                match quota {
                    Some(q) => format!("{q} {CPU_PERIOD_US}"),
                    None => format!("max {CPU_PERIOD_US}"),
                },
            ));
            if let Some(s) = shares {
                out.push(("cpu.weight", (1 + ((s - 2) * 9999) / 262_142).to_string()));
            }
            out.push((
                "memory.max",
                res.memory_limit_bytes
                    .map_or_else(|| "max".to_owned(), |b| b.to_string()),
            ));
            if res.memory_limit_bytes.is_some() {
                out.push(("memory.swap.max", "0".to_owned()));
            }
        }
        CgroupVersion::V1 => {
            out.push(("cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
            out.push((
                "cpu.cfs_quota_us",
                quota.map_or_else(|| "-1".to_owned(), |q| q.to_string()),
            ));
            if let Some(s) = shares {
                out.push(("cpu.shares", s.to_string()));
            }
            out.push((
                "memory.limit_in_bytes",
                res.memory_limit_bytes
                    .map_or_else(|| "-1".to_owned(), |b| b.to_string()),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_map_to_files() {
        let res = Resources {
            cpu_limit_millis: Some(500),
            cpu_request_millis: Some(250),
            memory_limit_bytes: Some(32 << 20),
        };
        let v2 = limit_files(CgroupVersion::V2, &res);
        assert!(v2.contains(&("cpu.max", "50000 100000".into())));
        assert!(v2.contains(&("memory.max", (32u64 << 20).to_string())));
        assert!(v2.contains(&("cpu.weight", "10".into())));
        let v1 = limit_files(CgroupVersion::V1, &res);
        assert!(v1.contains(&("cpu.cfs_quota_us", "50000".into())));
        assert!(v1.contains(&("cpu.shares", "256".into())));
        let none = limit_files(CgroupVersion::V1, &Resources::default());
        assert!(none.contains(&("cpu.cfs_quota_us", "-1".into())));
        assert!(none.contains(&("memory.limit_in_bytes", "-1".into())));
        // Tiny limits are clamped to the kernel's minimum quota.
        let tiny = limit_files(
            CgroupVersion::V2,
            &Resources {
                cpu_limit_millis: Some(1),
                ..Default::default()
            },
        );
        assert!(tiny.contains(&("cpu.max", "1000 100000".into())));
    }

    #[test]
    fn hierarchy_from_mountinfo() {
        let hybrid = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
32 25 0:28 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
33 25 0:29 / /sys/fs/cgroup/cpuset rw,nosuid - cgroup cgroup rw,cpuset";
        assert_eq!(
            find_hierarchy(hybrid).unwrap(),
            Hierarchy::V1 {
                cpu: "/sys/fs/cgroup/cpu,cpuacct".into(),
                memory: "/sys/fs/cgroup/memory".into()
            }
        );
        assert!(find_hierarchy("1 0 0:1 / / rw - ext4 /dev/sda rw").is_err());
    }
}

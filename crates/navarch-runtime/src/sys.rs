//! Process plumbing shared by the shim (container processes) and the agent
//! (exec processes): what a child does between `fork` and `execve`, /proc
//! parsing, users, wait statuses.

use crate::error::StartFailure;
use crate::types::Mount;
use nix::libc;
use nix::sys::wait::WaitStatus;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Default `PATH` for processes whose env has none (containerd's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Numeric credentials a process switches to before `execve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Resolves `runAsUser`/`runAsGroup`/`supplementalGroups`: `None` when the
/// process keeps the caller's identity.
pub fn resolve_creds(user: &crate::types::UserSpec) -> Option<Creds> {
    if user.run_as_user.is_none()
        && user.run_as_group.is_none()
        && user.supplemental_groups.is_empty()
    {
        return None;
    }
    let uid = user
        .run_as_user
        .unwrap_or_else(|| nix::unistd::geteuid().as_raw());
    let gid = user.run_as_group.unwrap_or_else(|| {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.gid.as_raw())
            .unwrap_or(0)
    });
    Some(Creds {
        uid,
        gid,
        groups: user.supplemental_groups.clone(),
    })
}

/// The container env with `PATH` and `HOME` filled in when missing (as
/// runc does), later duplicates winning.
pub fn resolve_env(env: &[(String, String)], uid: u32) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(env.len() + 2);
    for (k, v) in env {
        if let Some(slot) = out.iter_mut().find(|(k2, _)| k2 == k) {
            slot.1 = v.clone();
        } else {
            out.push((k.clone(), v.clone()));
        }
    }
    if !out.iter().any(|(k, _)| k == "PATH") {
        out.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if !out.iter().any(|(k, _)| k == "HOME") {
        let home = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.dir.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into());
        out.push(("HOME".into(), home));
    }
    out
}

/// How the child gets its mount namespace.
#[derive(Debug)]
pub enum MountSetup {
    /// Stay in the caller's.
    Inherit,
    /// A new private namespace with these bind mounts (source, target,
    /// read-only).
    Private(Vec<(CString, CString, bool)>),
    /// Join this namespace (`/proc/<pid>/ns/mnt` of a container).
    Join(OwnedFd),
}

/// Everything a child does after `fork` and before `execve`. Built in the
/// parent (all allocation happens there); [`ChildPlan::apply`] then only
/// makes raw system calls, as is required between `fork` and `execve`.
#[derive(Debug)]
pub struct ChildPlan {
    pub setsid: bool,
    /// Make fd 0 (a pty slave) the controlling terminal.
    pub controlling_tty: bool,
    /// `cgroup.procs` files opened for writing; the child writes `0` to
    /// each to move itself.
    pub cgroup_procs: Vec<OwnedFd>,
    pub mounts: MountSetup,
    pub cwd: CString,
    pub creds: Option<Creds>,
    /// Write end of a close-on-exec pipe: on failure the child writes the
    /// index of the failed step (u32, native endian) there.
    pub diag: Option<OwnedFd>,
    /// Description of each step, by index.
    pub steps: Vec<String>,
}

impl ChildPlan {
    pub fn new(cwd: &Path) -> io::Result<Self> {
        Ok(ChildPlan {
            setsid: true,
            controlling_tty: false,
            cgroup_procs: Vec::new(),
            mounts: MountSetup::Inherit,
            cwd: cstring(cwd.as_os_str().as_bytes())?,
            creds: None,
            diag: None,
            steps: Vec::new(),
        })
    }

    /// Precomputes the step descriptions; call once the plan is complete.
    pub fn describe(&mut self, cwd: &Path, cgroup_files: &[std::path::PathBuf]) {
        let mut steps = vec![
            "setsid".to_owned(),
            "set the controlling terminal".to_owned(),
            format!(
                "join cgroup {}",
                cgroup_files
                    .first()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            "create a private mount namespace".to_owned(),
            "make mounts private to the container".to_owned(),
            "join the container's mount namespace".to_owned(),
            format!(
                "chdir to cwd ({:?}) set for the container",
                cwd.display().to_string()
            ),
            "setgroups".to_owned(),
            format!("setgid {}", self.creds.as_ref().map(|c| c.gid).unwrap_or(0)),
            format!("setuid {}", self.creds.as_ref().map(|c| c.uid).unwrap_or(0)),
        ];
        if let MountSetup::Private(m) = &self.mounts {
            for (src, dst, ro) in m {
                steps.push(format!(
                    "bind mount {} on {}",
                    src.to_string_lossy(),
                    dst.to_string_lossy()
                ));
                steps.push(format!(
                    "remount {} read-only{}",
                    dst.to_string_lossy(),
                    if *ro { "" } else { " (unused)" }
                ));
            }
        }
        self.steps = steps;
    }

    fn fail(&self, step: u32) -> io::Error {
        let err = io::Error::last_os_error();
        if let Some(d) = &self.diag {
            let bytes = step.to_ne_bytes();
            // SAFETY: write(2) on an fd we own, from a live 4-byte buffer; it
            // is async-signal-safe.
            unsafe { libc::write(d.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        }
        err
    }

    /// Runs in the forked child. Only async-signal-safe system calls, no
    /// allocation.
    pub fn apply(&self) -> io::Result<()> {
        // SAFETY: plain system calls on fds owned by the plan and on
        // NUL-terminated strings it keeps alive for the whole call; null
        // pointers only where mount(2) allows them. Nothing allocates or
        // frees memory, so this is sound between fork and exec.
        unsafe {
            if self.setsid && libc::setsid() < 0 {
                return Err(self.fail(0));
            }
            if self.controlling_tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(self.fail(1));
            }
            for fd in &self.cgroup_procs {
                if libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) < 0 {
                    return Err(self.fail(2));
                }
            }
            let null = std::ptr::null::<libc::c_char>();
            match &self.mounts {
                MountSetup::Inherit => {}
                MountSetup::Private(mounts) => {
                    if libc::unshare(libc::CLONE_NEWNS) < 0 {
                        return Err(self.fail(3));
                    }
                    // Host mounts still propagate in; ours never leak out.
                    let flags = libc::MS_REC | libc::MS_SLAVE;
                    if libc::mount(null, c"/".as_ptr(), null, flags, std::ptr::null()) < 0 {
                        return Err(self.fail(4));
                    }
                    for (i, (src, dst, ro)) in mounts.iter().enumerate() {
                        let step = 10 + 2 * i as u32;
                        let flags = libc::MS_BIND | libc::MS_REC;
                        if libc::mount(src.as_ptr(), dst.as_ptr(), null, flags, std::ptr::null())
                            < 0
                        {
                            return Err(self.fail(step));
                        }
                        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
                        if *ro && libc::mount(null, dst.as_ptr(), null, flags, std::ptr::null()) < 0
                        {
                            return Err(self.fail(step + 1));
                        }
                    }
                }
                MountSetup::Join(fd) => {
                    if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNS) < 0 {
                        return Err(self.fail(5));
                    }
                }
            }
            if libc::chdir(self.cwd.as_ptr()) < 0 {
                return Err(self.fail(6));
            }
            if let Some(c) = &self.creds {
                let groups: &[u32] = &c.groups;
                if libc::setgroups(groups.len(), groups.as_ptr()) < 0 {
                    return Err(self.fail(7));
                }
                if libc::setgid(c.gid) < 0 {
                    return Err(self.fail(8));
                }
                if libc::setuid(c.uid) < 0 {
                    return Err(self.fail(9));
                }
            }
        }
        Ok(())
    }

    /// Turns a spawn error into a [`StartFailure`], using the step the child
    /// reported on `diag_read` (if any).
    pub fn start_failure(
        &self,
        program: &str,
        err: &io::Error,
        diag_read: Option<&OwnedFd>,
    ) -> StartFailure {
        let mut step = None;
        if let Some(r) = diag_read {
            let mut b = [0u8; 4];
            if let Ok(4) = nix::unistd::read(r, &mut b) {
                step = Some(u32::from_ne_bytes(b) as usize);
            }
        }
        let message = errno_message(err);
        match step {
            Some(i) => StartFailure::Setup {
                step: self
                    .steps
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("step {i}")),
                message,
            },
            None => exec_failure(program, err),
        }
    }
}

/// `execve` errors as runc words them.
pub fn exec_failure(program: &str, err: &io::Error) -> StartFailure {
    let program = program.to_owned();
    match err.raw_os_error() {
        Some(libc::ENOENT) if !program.contains('/') => {
            StartFailure::ExecutableNotFound { program }
        }
        Some(libc::ENOENT) => StartFailure::NoSuchFile { program },
        Some(libc::EACCES) => StartFailure::PermissionDenied { program },
        _ => StartFailure::Exec {
            program,
            message: errno_message(err),
        },
    }
}

/// "no such file or directory" rather than "No such file or directory (os error 2)".
pub fn errno_message(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => {
            let d = nix::errno::Errno::from_raw(code).desc();
            let mut s = d.to_owned();
            if let Some(first) = s.get_mut(0..1) {
                first.make_ascii_lowercase();
            }
            s
        }
        None => err.to_string(),
    }
}

pub fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "contains a NUL byte"))
}

/// Builds the bind-mount list of a private namespace, creating missing
/// targets (directory or empty file, matching the source) on the host.
pub fn prepare_mounts(mounts: &[Mount]) -> io::Result<Vec<(CString, CString, bool)>> {
    let mut out = Vec::with_capacity(mounts.len());
    for m in mounts {
        let meta = fs::metadata(&m.host_path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("volume source {}: {e}", m.host_path.display()),
            )
        })?;
        if !m.container_path.exists() {
            if meta.is_dir() {
                fs::create_dir_all(&m.container_path)?;
            } else {
                if let Some(parent) = m.container_path.parent() {
                    fs::create_dir_all(parent)?;
                }
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&m.container_path)?;
            }
        }
        out.push((
            cstring(m.host_path.as_os_str().as_bytes())?,
            cstring(m.container_path.as_os_str().as_bytes())?,
            m.read_only,
        ));
    }
    Ok(out)
}

/// Start time of a process in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`): with the pid it names one process, across pid reuse.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_start_time(&stat)
}

pub(crate) fn parse_stat_start_time(stat: &str) -> Option<u64> {
    // `comm` (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after ')'; starttime is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True if process `pid` exists, is not a zombie, and started at
/// `start_time`.
pub fn process_alive(pid: u32, start_time: u64) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let state = stat[close + 1..].split_whitespace().next();
    state != Some("Z") && state != Some("X") && parse_stat_start_time(&stat) == Some(start_time)
}

/// Exit code (128 + signal for signals, as the kubelet reports) and signal.
pub fn exit_code(status: WaitStatus) -> Option<(i32, Option<i32>)> {
    match status {
        WaitStatus::Exited(_, code) => Some((code, None)),
        WaitStatus::Signaled(_, sig, _) => Some((128 + sig as i32, Some(sig as i32))),
        _ => None,
    }
}

/// Same, from a std `ExitStatus`.
pub fn std_exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => 255,
    }
}

/// Creates a close-on-exec pipe.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// Marks an fd close-on-exec.
pub fn set_cloexec(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// True if this process can create mount namespaces and switch users.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_start_time_survives_odd_comm() {
        let stat = "1234 (we (ird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_stat_start_time(stat), Some(98765));
        let me = std::process::id();
        let t = process_start_time(me).unwrap();
        assert!(process_alive(me, t));
        assert!(!process_alive(me, t + 1));
    }

    #[test]
    fn env_defaults_and_overrides() {
        let env = vec![
            ("A".into(), "1".into()),
            ("A".into(), "2".into()),
            ("HOME".into(), "/h".into()),
        ];
        let out = resolve_env(&env, 0);
        assert_eq!(out[0], ("A".into(), "2".into()));
        assert!(out.contains(&("PATH".into(), DEFAULT_PATH.into())));
        assert!(out.contains(&("HOME".into(), "/h".into())));
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn exec_failures_read_like_runc() {
        let enoent = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(
            exec_failure("foo", &enoent).to_string(),
            "exec: \"foo\": executable file not found in $PATH"
        );
        assert_eq!(
            exec_failure("/nope", &enoent).to_string(),
            "exec: \"/nope\": stat /nope: no such file or directory"
        );
        assert_eq!(
            errno_message(&io::Error::from_raw_os_error(libc::EPERM)),
            "operation not permitted"
        );
    }
}

//! A pod's volumes on the process runtime: directories of the node that the
//! runtime bind-mounts into the container's private mount namespace.
//!
//! Layout, as the kubelet's: `<pod_dir>/volumes/<plugin>/<volume>` with the
//! plugin directories `kubernetes.io~empty-dir`, `kubernetes.io~configmap`,
//! `kubernetes.io~secret`, `kubernetes.io~downward-api` and
//! `kubernetes.io~projected`. `hostPath` volumes are the host path itself.
//!
//! - **emptyDir**: a directory, mode 0777. `medium: Memory` is a tmpfs
//!   (size `sizeLimit`, else the node's allocatable memory) when the agent
//!   runs as root and may mount; otherwise (not root, or the mount is
//!   refused) a plain directory on disk, with a warning logged. `HugePages`
//!   media are not supported.
//! - **secret** and **projected**: like the kubelet, on a tmpfs when the
//!   agent can mount one, so Secret data does not reach the disk; else a
//!   plain directory.
//! - **configMap**, **secret**, **downwardAPI**, **projected**: files
//!   written the way the kubelet's atomic writer does. The data lives in a
//!   timestamped directory (`..2025_01_31_12_00_00.123456789`, mode 0755);
//!   `..data` is a symlink to it, replaced by a rename; every user-visible
//!   top-level name is a symlink into `..data`. A re-run rewrites nothing
//!   when the content (paths, bytes and modes) is unchanged; when it
//!   changed, a new data directory is written and swapped in, so a
//!   container that bind-mounted the volume directory sees either the old
//!   or the new set of files, never a mix. File modes are `items[].mode`,
//!   else `defaultMode`, else 0644; nothing is added to them (a Secret's
//!   files are exactly as readable as its mode says). File ownership
//!   (`fsGroup`) is not applied.
//! - **hostPath**: the path itself after the `type` check
//!   (`DirectoryOrCreate` creates a directory 0755, `FileOrCreate` an empty
//!   file 0644 in an existing parent).
//!
//! Every other volume type (persistentVolumeClaim, nfs, csi, ephemeral,
//! image, …) is refused, as are `serviceAccountToken` and
//! `clusterTrustBundle` projections (not supported yet).

use crate::env::{pod_field_value, resource_field_value, secret_data, ConfigObjects, PodContext};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, HostPathVolumeSource, KeyToPath, Secret, Volume,
};
use navarch_api::kinds::util::parse_quantity;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{
    symlink, DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt,
};
use std::path::{Component, Path, PathBuf};

const EMPTY_DIR: &str = "kubernetes.io~empty-dir";
const CONFIG_MAP: &str = "kubernetes.io~configmap";
const SECRET: &str = "kubernetes.io~secret";
const DOWNWARD_API: &str = "kubernetes.io~downward-api";
const PROJECTED: &str = "kubernetes.io~projected";

/// The mode of configMap, secret, downwardAPI and projected files when the
/// volume sets no `defaultMode`.
pub const DEFAULT_FILE_MODE: u32 = 0o644;

const DATA_DIR_LINK: &str = "..data";
const DATA_DIR_TMP_LINK: &str = "..data_tmp";

/// Host paths of a pod's volumes, by volume name.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PodVolumes {
    pub paths: BTreeMap<String, PathBuf>,
    /// Volumes that are always mounted read-only whatever the volumeMount
    /// says (configMap, secret, downwardAPI, projected), as the kubelet
    /// does.
    pub read_only: BTreeSet<String>,
}

/// A volume could not be set up or mounted. Displays as the kubelet's
/// `FailedMount` event message: `MountVolume.SetUp failed for volume "<volume>" : <message>`.
///
/// Errors of [`container_mounts`] (unknown volume, bad subPath) are not
/// mount failures in the kubelet: report `message` alone, as a
/// `CreateContainerConfigError`.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeError {
    pub volume: String,
    pub message: String,
}

impl VolumeError {
    fn new(volume: &str, message: impl Into<String>) -> Self {
        VolumeError {
            volume: volume.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for VolumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MountVolume.SetUp failed for volume {:?} : {}",
            self.volume, self.message
        )
    }
}

impl std::error::Error for VolumeError {}

/// Whether tmpfs mounts are attempted (root only; tests turn them off).
#[derive(Debug, Clone, Copy)]
struct Options {
    tmpfs: bool,
}

/// Materialises every volume of the pod under `pod_dir/volumes/<kind>/<name>`
/// (see the module docs). Idempotent: the pod worker re-runs it to pick up
/// ConfigMap and Secret changes. Every volume is attempted; the first error
/// is returned.
pub fn prepare(
    ctx: &PodContext<'_>,
    pod_dir: &Path,
    objects: &ConfigObjects,
) -> Result<PodVolumes, VolumeError> {
    let tmpfs = nix::unistd::geteuid().is_root();
    prepare_with(ctx, pod_dir, objects, Options { tmpfs })
}

fn prepare_with(
    ctx: &PodContext<'_>,
    pod_dir: &Path,
    objects: &ConfigObjects,
    opts: Options,
) -> Result<PodVolumes, VolumeError> {
    let mut out = PodVolumes::default();
    let mut first_err = None;
    let base = pod_dir.join("volumes");
    for vol in ctx.pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        match prepare_volume(ctx, &base, vol, objects, opts) {
            Ok((path, read_only)) => {
                out.paths.insert(vol.name.clone(), path);
                if read_only {
                    out.read_only.insert(vol.name.clone());
                }
            }
            Err(message) => {
                first_err.get_or_insert(VolumeError::new(&vol.name, message));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// One volume: its host path and whether it is read-only by kind.
fn prepare_volume(
    ctx: &PodContext<'_>,
    base: &Path,
    vol: &Volume,
    objects: &ConfigObjects,
    opts: Options,
) -> Result<(PathBuf, bool), String> {
    let dir = |plugin: &str| base.join(plugin).join(&vol.name);
    if let Some(ed) = &vol.empty_dir {
        let path = dir(EMPTY_DIR);
        let medium = ed.medium.as_deref().unwrap_or_default();
        match medium {
            "" => make_volume_dir(&path, 0o777)?,
            "Memory" => {
                make_volume_dir(&path, 0o777)?;
                let size = match ed.size_limit.as_ref().and_then(|q| parse_quantity(&q.0)) {
                    Some(n) if n > 0 => Some((n + 999_999_999) / 1_000_000_000),
                    _ => Some(i128::from(ctx.node_allocatable.memory_bytes)).filter(|&b| b > 0),
                };
                if opts.tmpfs {
                    mount_tmpfs(&path, size, 0o777)?;
                }
            }
            m if m.starts_with("HugePages") => {
                return Err(
                    "hugePages emptyDir volumes are not supported by the process runtime".into(),
                )
            }
            m => return Err(format!("unknown storage medium {m:?}")),
        }
        return Ok((path, false));
    }
    if let Some(hp) = &vol.host_path {
        return host_path(hp).map(|p| (p, false));
    }
    let (plugin, payload, on_tmpfs) = if let Some(src) = &vol.config_map {
        let optional = src.optional == Some(true);
        let cm = match objects.config_maps.get(&src.name) {
            Some(cm) => cm.clone(),
            None if optional => ConfigMap::default(),
            None => return Err(format!("configmap {:?} not found", src.name)),
        };
        let mode = file_mode(src.default_mode, DEFAULT_FILE_MODE);
        (
            CONFIG_MAP,
            config_map_payload(src.items.as_deref(), &cm, mode, optional)?,
            false,
        )
    } else if let Some(src) = &vol.secret {
        let name = src.secret_name.as_deref().unwrap_or_default();
        let optional = src.optional == Some(true);
        let secret = match objects.secrets.get(name) {
            Some(s) => s.clone(),
            None if optional => Secret::default(),
            None => return Err(format!("secret {name:?} not found")),
        };
        let mode = file_mode(src.default_mode, DEFAULT_FILE_MODE);
        (
            SECRET,
            secret_payload(src.items.as_deref(), &secret, mode, optional)?,
            true,
        )
    } else if let Some(src) = &vol.downward_api {
        let mode = file_mode(src.default_mode, DEFAULT_FILE_MODE);
        (
            DOWNWARD_API,
            downward_payload(ctx, src.items.as_deref(), mode)?,
            false,
        )
    } else if let Some(src) = &vol.projected {
        let mode = file_mode(src.default_mode, DEFAULT_FILE_MODE);
        let mut payload = Payload::new();
        for source in src.sources.iter().flatten() {
            if source.service_account_token.is_some() {
                return Err("serviceAccountToken projections are not supported yet".into());
            }
            if source.cluster_trust_bundle.is_some() {
                return Err("clusterTrustBundle projections are not supported yet".into());
            }
            if let Some(p) = &source.config_map {
                let optional = p.optional == Some(true);
                let cm = match objects.config_maps.get(&p.name) {
                    Some(cm) => cm.clone(),
                    None if optional => ConfigMap::default(),
                    None => return Err(format!("configmap {:?} not found", p.name)),
                };
                payload.extend(config_map_payload(p.items.as_deref(), &cm, mode, optional)?);
            }
            if let Some(p) = &source.secret {
                let optional = p.optional == Some(true);
                let secret = match objects.secrets.get(&p.name) {
                    Some(s) => s.clone(),
                    None if optional => Secret::default(),
                    None => return Err(format!("secret {:?} not found", p.name)),
                };
                payload.extend(secret_payload(p.items.as_deref(), &secret, mode, optional)?);
            }
            if let Some(p) = &source.downward_api {
                payload.extend(downward_payload(ctx, p.items.as_deref(), mode)?);
            }
        }
        (PROJECTED, payload, true)
    } else {
        return Err(format!(
            "{} volumes are not supported by the process runtime",
            volume_kind(vol)
        ));
    };
    let path = dir(plugin);
    make_volume_dir(&path, 0o755)?;
    if on_tmpfs && opts.tmpfs {
        mount_tmpfs(&path, None, 0o755)?;
    }
    write_atomic(&path, &payload).map_err(|e| format!("failed to write volume files: {e}"))?;
    Ok((path, true))
}

/// The name of a volume's type as in the API (`persistentVolumeClaim`).
fn volume_kind(vol: &Volume) -> String {
    let value = serde_json::to_value(vol).unwrap_or_default();
    value
        .as_object()
        .and_then(|o| o.keys().find(|k| *k != "name").cloned())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn file_mode(mode: Option<i32>, default: u32) -> u32 {
    mode.map(|m| (m as u32) & 0o777).unwrap_or(default)
}

/// A volume's files: relative path → (content, mode).
type Payload = BTreeMap<String, (Vec<u8>, u32)>;

fn config_map_payload(
    items: Option<&[KeyToPath]>,
    cm: &ConfigMap,
    mode: u32,
    optional: bool,
) -> Result<Payload, String> {
    let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in cm.data.iter().flatten() {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    for (k, v) in cm.binary_data.iter().flatten() {
        data.insert(k.clone(), v.0.clone());
    }
    key_payload(
        items,
        data,
        mode,
        optional,
        "configmap references non-existent config key",
    )
}

fn secret_payload(
    items: Option<&[KeyToPath]>,
    secret: &Secret,
    mode: u32,
    optional: bool,
) -> Result<Payload, String> {
    key_payload(
        items,
        secret_data(secret),
        mode,
        optional,
        "secret references non-existent secret key",
    )
}

/// Kubelet's `MakePayload`: every key with the default mode, or the listed
/// items (a missing key fails unless the source is optional).
fn key_payload(
    items: Option<&[KeyToPath]>,
    data: BTreeMap<String, Vec<u8>>,
    mode: u32,
    optional: bool,
    missing: &str,
) -> Result<Payload, String> {
    let mut payload = Payload::new();
    match items {
        None | Some([]) => {
            for (k, v) in data {
                payload.insert(k, (v, mode));
            }
        }
        Some(items) => {
            for item in items {
                let Some(v) = data.get(&item.key).cloned() else {
                    if optional {
                        continue;
                    }
                    return Err(format!("{missing}: {}", item.key));
                };
                payload.insert(item.path.clone(), (v, file_mode(item.mode, mode)));
            }
        }
    }
    Ok(payload)
}

fn downward_payload(
    ctx: &PodContext<'_>,
    items: Option<&[DownwardAPIVolumeFile]>,
    mode: u32,
) -> Result<Payload, String> {
    let mut payload = Payload::new();
    for item in items.into_iter().flatten() {
        let value = if let Some(f) = &item.field_ref {
            pod_field_value(ctx.pod, &f.field_path)?
        } else if let Some(r) = &item.resource_field_ref {
            resource_field_value(ctx, None, r)?
        } else {
            String::new()
        };
        payload.insert(
            item.path.clone(),
            (value.into_bytes(), file_mode(item.mode, mode)),
        );
    }
    Ok(payload)
}

fn make_volume_dir(path: &Path, mode: u32) -> Result<(), String> {
    if path.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(path)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(mode)))
        .map_err(|e| format!("failed to create directory {}: {e}", path.display()))
}

/// Mounts a tmpfs on `path` unless one is there already. A refused mount
/// (no CAP_SYS_ADMIN) leaves a plain directory and logs a warning.
fn mount_tmpfs(path: &Path, size: Option<i128>, mode: u32) -> Result<(), String> {
    if is_mount_point(path) {
        return Ok(());
    }
    let mut data = format!("mode={mode:o}");
    if let Some(size) = size {
        data.push_str(&format!(",size={size}"));
    }
    match nix::mount::mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => {
            // Warn once: the pod worker re-runs this periodically.
            static WARNED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(path = %path.display(), "tmpfs mount refused; volumes that want one use plain directories");
            }
            Ok(())
        }
        Err(e) => Err(format!("failed to mount tmpfs at {}: {e}", path.display())),
    }
}

/// Whether `path` is the root of a mount: another device than its parent.
fn is_mount_point(path: &Path) -> bool {
    let (Ok(m), Some(Ok(p))) = (fs::metadata(path), path.parent().map(fs::metadata)) else {
        return false;
    };
    m.dev() != p.dev() || m.ino() == p.ino()
}

/// The `hostPath` type check, worded as the kubelet's.
fn host_path(src: &HostPathVolumeSource) -> Result<PathBuf, String> {
    let path = PathBuf::from(&src.path);
    let kind = src.type_.as_deref().unwrap_or_default();
    let meta = fs::metadata(&path).ok();
    let is = |f: fn(&fs::FileType) -> bool| meta.as_ref().is_some_and(|m| f(&m.file_type()));
    let fail = |what: &str| {
        Err(format!(
            "hostPath type check failed: {} is not {what}",
            src.path
        ))
    };
    match kind {
        "" => {}
        "DirectoryOrCreate" if meta.is_none() => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&path)
                .map_err(|e| format!("mkdir {}: {e}", src.path))?;
        }
        "DirectoryOrCreate" | "Directory" => {
            if !is(fs::FileType::is_dir) {
                return fail("a directory");
            }
        }
        "FileOrCreate" if meta.is_none() => {
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(&path)
                .map_err(|e| format!("open {}: {e}", src.path))?;
        }
        "FileOrCreate" | "File" => {
            if !is(fs::FileType::is_file) {
                return fail("a file");
            }
        }
        "Socket" => {
            if !is(FileTypeExt::is_socket) {
                return fail("a socket file");
            }
        }
        "CharDevice" => {
            if !is(FileTypeExt::is_char_device) {
                return fail("a character device");
            }
        }
        "BlockDevice" => {
            if !is(FileTypeExt::is_block_device) {
                return fail("a block device");
            }
        }
        other => return Err(format!("{other} is an invalid volume type")),
    }
    Ok(path)
}

/// Checks a payload path as the kubelet's atomic writer does and cleans it
/// (`./a//b` → `a/b`).
fn clean_payload_path(path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Err("invalid path: must not be empty".into());
    }
    if path.len() > 4096 {
        return Err(format!(
            "invalid path: must be less than or equal to 4096 characters: {path}"
        ));
    }
    let p = Path::new(path);
    if p.is_absolute() {
        return Err(format!("invalid path: must be relative path: {path}"));
    }
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => {
                let s = s.to_str().unwrap_or_default();
                if s.len() > 255 {
                    return Err(format!(
                        "invalid path: segments must be less than or equal to 255 characters: {path}"
                    ));
                }
                parts.push(s);
            }
            Component::CurDir => {}
            _ => return Err(format!("invalid path: must not contain '..': {path}")),
        }
    }
    let cleaned = parts.join("/");
    if cleaned.is_empty() {
        return Err(format!("invalid path: {path}"));
    }
    if cleaned.starts_with("..") {
        return Err(format!("invalid path: must not start with '..': {path}"));
    }
    Ok(cleaned)
}

/// Writes `payload` into `dir` as the kubelet's atomic writer does (see the
/// module docs). Returns whether anything was written.
fn write_atomic(dir: &Path, payload: &Payload) -> io::Result<bool> {
    let mut clean = Payload::new();
    for (path, v) in payload {
        let p =
            clean_payload_path(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        clean.insert(p, v.clone());
    }
    let payload = clean;
    let current = fs::read_link(dir.join(DATA_DIR_LINK))
        .ok()
        .and_then(|t| t.to_str().map(str::to_owned));
    let new_names: BTreeSet<&str> = payload
        .keys()
        .map(|p| p.split('/').next().unwrap_or(p))
        .collect();

    let unchanged = match &current {
        Some(ts) => read_tree(&dir.join(ts)).ok().as_ref() == Some(&payload),
        None => false,
    };
    if unchanged {
        remove_stale(dir, current.as_deref(), &new_names)?;
        make_visible(dir, &new_names)?;
        return Ok(false);
    }

    // A fresh timestamped data directory.
    let stamp = jiff::Timestamp::now()
        .strftime("..%Y_%m_%d_%H_%M_%S")
        .to_string();
    let ts_name = loop {
        let name = format!("{stamp}.{:09}", rand::random::<u32>() % 1_000_000_000);
        match fs::DirBuilder::new().mode(0o700).create(dir.join(&name)) {
            Ok(()) => break name,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let ts_dir = dir.join(&ts_name);
    fs::set_permissions(&ts_dir, fs::Permissions::from_mode(0o755))?;
    for (rel, (content, mode)) in &payload {
        let file = ts_dir.join(rel);
        if let Some(parent) = file.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)?;
        }
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)
            .and_then(|mut f| {
                io::Write::write_all(&mut f, content)?;
                f.set_permissions(fs::Permissions::from_mode(*mode))
            })?;
    }

    // Swap `..data` to the new directory in one rename.
    let tmp = dir.join(DATA_DIR_TMP_LINK);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    symlink(&ts_name, &tmp)?;
    fs::rename(&tmp, dir.join(DATA_DIR_LINK))?;

    make_visible(dir, &new_names)?;
    remove_stale(dir, Some(&ts_name), &new_names)?;
    Ok(true)
}

/// The user-visible symlinks `<name>` → `..data/<name>`.
fn make_visible(dir: &Path, names: &BTreeSet<&str>) -> io::Result<()> {
    for name in names {
        let link = dir.join(name);
        let target = Path::new(DATA_DIR_LINK).join(name);
        match fs::read_link(&link) {
            Ok(t) if t == target => continue,
            Ok(_) => fs::remove_file(&link)?,
            Err(_) => match fs::symlink_metadata(&link) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&link)?,
                Ok(_) => fs::remove_file(&link)?,
                Err(_) => {}
            },
        }
        symlink(&target, &link)?;
    }
    Ok(())
}

/// Removes old data directories and user-visible names no longer in the
/// payload.
fn remove_stale(dir: &Path, keep_ts: Option<&str>, names: &BTreeSet<&str>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == DATA_DIR_LINK || Some(name) == keep_ts || names.contains(name) {
            continue;
        }
        let ft = entry.file_type()?;
        if name.starts_with("..") && ft.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else if ft.is_symlink() {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// The files under a data directory, as a payload.
fn read_tree(root: &Path) -> io::Result<Payload> {
    fn walk(root: &Path, rel: &str, out: &mut Payload) -> io::Result<()> {
        for entry in fs::read_dir(root.join(rel))? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name
                .to_str()
                .ok_or_else(|| io::Error::other("non-utf-8 name"))?;
            let path = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            let ft = entry.file_type()?;
            if ft.is_dir() {
                walk(root, &path, out)?;
            } else if ft.is_file() {
                let mode = entry.metadata()?.permissions().mode() & 0o7777;
                out.insert(path.clone(), (fs::read(entry.path())?, mode));
            } else {
                return Err(io::Error::other("unexpected file type"));
            }
        }
        Ok(())
    }
    let mut out = Payload::new();
    walk(root, "", &mut out)?;
    Ok(out)
}

/// The container's bind mounts: each volumeMount becomes a
/// [`navarch_runtime::Mount`] from the volume's path (joined with `subPath`
/// or the expanded `subPathExpr`, created if missing, refused when
/// absolute, containing `..` or resolving outside the volume) to
/// `mountPath`, read-only when the volumeMount says so and always for
/// configMap, secret, downwardAPI and projected volumes. `env` is the
/// container's environment for `subPathExpr`.
pub fn container_mounts(
    container: &Container,
    volumes: &PodVolumes,
    env: &[(String, String)],
) -> Result<Vec<navarch_runtime::Mount>, VolumeError> {
    let mut mounts = Vec::new();
    for vm in container.volume_mounts.iter().flatten() {
        let err = |m: String| VolumeError::new(&vm.name, m);
        let Some(vol_path) = volumes.paths.get(&vm.name) else {
            return Err(err(format!(
                "cannot find volume {:?} to mount into container {:?}",
                vm.name, container.name
            )));
        };
        let sub_path = match (&vm.sub_path, &vm.sub_path_expr) {
            (Some(p), _) if !p.is_empty() => p.clone(),
            (_, Some(expr)) if !expr.is_empty() => expand_sub_path(expr, env).map_err(err)?,
            _ => String::new(),
        };
        let host_path = if sub_path.is_empty() {
            vol_path.clone()
        } else {
            safe_sub_path(vol_path, &sub_path, &vm.name, &container.name).map_err(err)?
        };
        mounts.push(navarch_runtime::Mount {
            host_path,
            container_path: PathBuf::from(&vm.mount_path),
            read_only: vm.read_only == Some(true) || volumes.read_only.contains(&vm.name),
        });
    }
    Ok(mounts)
}

/// Kubelet's `subPathExpr` expansion: every reference must name a
/// non-empty variable.
fn expand_sub_path(expr: &str, env: &[(String, String)]) -> Result<String, String> {
    let missing = std::cell::RefCell::new(BTreeSet::new());
    let out = crate::env::expand_with(expr, |name| {
        let v = env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        if v.is_empty() {
            missing.borrow_mut().insert(name.to_owned());
        }
        Some(v)
    });
    let missing = missing.into_inner();
    if !missing.is_empty() {
        return Err(format!(
            "missing value for {}",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(out)
}

fn safe_sub_path(
    vol_path: &Path,
    sub_path: &str,
    mount: &str,
    container: &str,
) -> Result<PathBuf, String> {
    if Path::new(sub_path).is_absolute() {
        return Err(format!(
            "error SubPath `{sub_path}` must not be an absolute path"
        ));
    }
    if Path::new(sub_path)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(format!(
            "unable to provision SubPath `{sub_path}`: must not contain '..'"
        ));
    }
    let base = fs::canonicalize(vol_path)
        .map_err(|e| format!("cannot resolve volume path {}: {e}", vol_path.display()))?;
    let joined = vol_path.join(sub_path);
    if fs::symlink_metadata(&joined).is_err() {
        let mode = fs::metadata(vol_path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o755);
        // Create component by component, refusing to follow a symlink out
        // of the volume on the way.
        let mut cur = base.clone();
        for c in Path::new(sub_path).components() {
            let Component::Normal(part) = c else { continue };
            cur.push(part);
            match fs::symlink_metadata(&cur) {
                Ok(_) => {
                    cur = fs::canonicalize(&cur).map_err(|e| e.to_string())?;
                    if !cur.starts_with(&base) {
                        return Err(format!(
                            "subpath {:?} not within volume path {:?}",
                            cur.display().to_string(),
                            base.display().to_string()
                        ));
                    }
                }
                Err(_) => {
                    fs::DirBuilder::new()
                        .mode(mode)
                        .create(&cur)
                        .and_then(|()| fs::set_permissions(&cur, fs::Permissions::from_mode(mode)))
                        .map_err(|_| {
                            format!(
                                "failed to create subPath directory for volumeMount {mount:?} of container {container:?}"
                            )
                        })?;
                }
            }
        }
    }
    let resolved = fs::canonicalize(&joined).map_err(|e| e.to_string())?;
    if !resolved.starts_with(&base) {
        return Err(format!(
            "subpath {:?} not within volume path {:?}",
            resolved.display().to_string(),
            base.display().to_string()
        ));
    }
    Ok(resolved)
}

/// Unmounts the pod's tmpfs volumes and removes its volume directories. A
/// mount that cannot be removed is an error, and nothing is deleted
/// through it.
pub fn teardown(pod_dir: &Path) -> io::Result<()> {
    let base = pod_dir.join("volumes");
    if fs::symlink_metadata(&base).is_err() {
        return Ok(());
    }
    let base = fs::canonicalize(&base)?;
    let mounted = mounts_under(&base)?;
    for m in mounted.iter().rev() {
        if let Err(e) = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(path = %m.display(), error = %e, "cannot unmount volume");
        }
    }
    let left = mounts_under(&base)?;
    if let Some(m) = left.first() {
        return Err(io::Error::other(format!(
            "{} is still mounted",
            m.display()
        )));
    }
    fs::remove_dir_all(&base)
}

/// Mount points at or below `base`, shallowest first (from
/// `/proc/self/mountinfo`).
fn mounts_under(base: &Path) -> io::Result<Vec<PathBuf>> {
    let info = match fs::read_to_string("/proc/self/mountinfo") {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(base))
        .collect();
    out.sort_by_key(|p| p.components().count());
    out.dedup();
    Ok(out)
}

/// Mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.len() - i >= 4 {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or_default();
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::NodeAllocatable;
    use k8s_openapi::api::core::v1::{Pod, VolumeMount};
    use k8s_openapi::ByteString;
    use serde_json::json;
    use std::io::Read;

    fn pod(volumes: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1",
                "labels": {"b": "2", "a": "x\"y"}, "annotations": {"k": "v"}},
            "spec": {"containers": [{"name": "app", "resources": {"limits": {"memory": "64Mi"}}}],
                "volumes": volumes}
        }))
        .unwrap()
    }

    fn objects() -> ConfigObjects {
        let mut o = ConfigObjects::default();
        o.config_maps.insert(
            "cm".into(),
            serde_json::from_value(
                json!({"data": {"a": "A", "b": "B"}, "binaryData": {"bin": "AAEC"}}),
            )
            .unwrap(),
        );
        o.secrets.insert(
            "s".into(),
            Secret {
                data: Some([("key".to_owned(), ByteString(vec![0, 159, 146, 150]))].into()),
                ..Default::default()
            },
        );
        o
    }

    const NO_TMPFS: Options = Options { tmpfs: false };

    fn prep(p: &Pod, dir: &Path, o: &ConfigObjects) -> Result<PodVolumes, VolumeError> {
        let alloc = NodeAllocatable {
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
            ephemeral_storage_bytes: 1 << 34,
        };
        let ctx = PodContext {
            pod: p,
            host_ip: "10.0.0.1",
            pod_ips: &[],
            node_allocatable: &alloc,
        };
        prepare_with(&ctx, dir, o, NO_TMPFS)
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn config_map_items_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let p = pod(json!([
            {"name": "all", "configMap": {"name": "cm"}},
            {"name": "some", "configMap": {"name": "cm", "defaultMode": 0o600,
                "items": [{"key": "a", "path": "sub/x"}, {"key": "b", "path": "y", "mode": 0o444}]}},
        ]));
        let v = prep(&p, dir.path(), &objects()).unwrap();
        let all = &v.paths["all"];
        assert_eq!(all, &dir.path().join("volumes/kubernetes.io~configmap/all"));
        assert_eq!(fs::read_to_string(all.join("a")).unwrap(), "A");
        assert_eq!(fs::read(all.join("bin")).unwrap(), vec![0, 1, 2]);
        assert_eq!(mode(&all.join("a")), 0o644);
        assert_eq!(fs::read_link(all.join("a")).unwrap(), Path::new("..data/a"));
        let some = &v.paths["some"];
        assert_eq!(fs::read_to_string(some.join("sub/x")).unwrap(), "A");
        assert_eq!(mode(&some.join("sub/x")), 0o600);
        assert_eq!(mode(&some.join("y")), 0o444);
        assert!(!some.join("a").exists());
        assert!(v.read_only.contains("all") && v.read_only.contains("some"));

        // Missing key, missing object, optional.
        let p = pod(
            json!([{"name": "v", "configMap": {"name": "cm", "items": [{"key": "z", "path": "z"}]}}]),
        );
        let e = prep(&p, dir.path(), &objects()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "MountVolume.SetUp failed for volume \"v\" : configmap references non-existent config key: z"
        );
        let p = pod(json!([{"name": "v", "configMap": {"name": "nope"}}]));
        assert_eq!(
            prep(&p, dir.path(), &objects()).unwrap_err().message,
            "configmap \"nope\" not found"
        );
        let p = pod(json!([{"name": "v", "configMap": {"name": "nope", "optional": true}}]));
        let v = prep(&p, dir.path(), &objects()).unwrap();
        assert!(v.paths["v"].join(DATA_DIR_LINK).exists());
    }

    #[test]
    fn updates_swap_atomically_and_idempotently() {
        let dir = tempfile::tempdir().unwrap();
        let p = pod(json!([{"name": "cfg", "configMap": {"name": "cm"}}]));
        let mut o = objects();
        let v = prep(&p, dir.path(), &o).unwrap();
        let vol = v.paths["cfg"].clone();
        let target1 = fs::read_link(vol.join(DATA_DIR_LINK)).unwrap();

        // Unchanged content: nothing rewritten.
        prep(&p, dir.path(), &o).unwrap();
        assert_eq!(fs::read_link(vol.join(DATA_DIR_LINK)).unwrap(), target1);

        let mut old = fs::File::open(vol.join("a")).unwrap();
        o.config_maps.get_mut("cm").unwrap().data = Some(
            [
                ("a".to_owned(), "A2".to_owned()),
                ("c".to_owned(), "C".to_owned()),
            ]
            .into(),
        );
        o.config_maps.get_mut("cm").unwrap().binary_data = None;
        prep(&p, dir.path(), &o).unwrap();
        let target2 = fs::read_link(vol.join(DATA_DIR_LINK)).unwrap();
        assert_ne!(target1, target2);
        let mut s = String::new();
        old.read_to_string(&mut s).unwrap();
        assert_eq!(s, "A", "an open file keeps its old content");
        assert_eq!(fs::read_to_string(vol.join("a")).unwrap(), "A2");
        assert_eq!(fs::read_to_string(vol.join("c")).unwrap(), "C");
        assert!(
            fs::symlink_metadata(vol.join("b")).is_err(),
            "removed key disappears"
        );
        assert!(!vol.join(&target1).exists(), "old data dir removed");
        let mut names: Vec<String> = fs::read_dir(&vol)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                target2.to_str().unwrap().to_owned(),
                "..data".to_owned(),
                "a".into(),
                "c".into()
            ]
        );
        assert!(target2.to_str().unwrap().starts_with("..20"));
    }

    #[test]
    fn secrets_binary_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let p = pod(json!([
            {"name": "s", "secret": {"secretName": "s", "defaultMode": 0o400}},
            {"name": "gone", "secret": {"secretName": "nope", "optional": true}},
        ]));
        let v = prep(&p, dir.path(), &objects()).unwrap();
        let f = v.paths["s"].join("key");
        assert_eq!(fs::read(&f).unwrap(), vec![0, 159, 146, 150]);
        assert_eq!(mode(&f), 0o400);
        assert_eq!(
            v.paths["s"],
            dir.path().join("volumes/kubernetes.io~secret/s")
        );
        let p = pod(json!([{"name": "s", "secret": {"secretName": "nope"}}]));
        assert_eq!(
            prep(&p, dir.path(), &objects()).unwrap_err().message,
            "secret \"nope\" not found"
        );
        let p = pod(
            json!([{"name": "s", "secret": {"secretName": "s", "items": [{"key": "x", "path": "x"}]}}]),
        );
        assert_eq!(
            prep(&p, dir.path(), &objects()).unwrap_err().message,
            "secret references non-existent secret key: x"
        );
    }

    #[test]
    fn downward_api_and_projected() {
        let dir = tempfile::tempdir().unwrap();
        let p = pod(json!([
            {"name": "d", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                {"path": "mem", "resourceFieldRef": {"containerName": "app", "resource": "limits.memory", "divisor": "1Mi"}},
                {"path": "cpu", "resourceFieldRef": {"containerName": "app", "resource": "limits.cpu", "divisor": "1m"}, "mode": 0o400},
            ]}},
            {"name": "p", "projected": {"defaultMode": 0o640, "sources": [
                {"configMap": {"name": "cm", "items": [{"key": "a", "path": "cm/a"}]}},
                {"secret": {"name": "s"}},
                {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ]}},
        ]));
        let v = prep(&p, dir.path(), &objects()).unwrap();
        let d = &v.paths["d"];
        assert_eq!(
            fs::read_to_string(d.join("labels")).unwrap(),
            "a=\"x\\\"y\"\nb=\"2\""
        );
        assert_eq!(fs::read_to_string(d.join("name")).unwrap(), "web");
        assert_eq!(fs::read_to_string(d.join("mem")).unwrap(), "64");
        assert_eq!(
            fs::read_to_string(d.join("cpu")).unwrap(),
            "2000",
            "node allocatable"
        );
        assert_eq!(mode(&d.join("cpu")), 0o400);
        let pr = &v.paths["p"];
        assert_eq!(fs::read_to_string(pr.join("cm/a")).unwrap(), "A");
        assert_eq!(fs::read(pr.join("key")).unwrap().len(), 4);
        assert_eq!(fs::read_to_string(pr.join("ns")).unwrap(), "ns");
        assert_eq!(mode(&pr.join("ns")), 0o640);

        let p = pod(json!([{"name": "p", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token"}}]}}]));
        assert_eq!(
            prep(&p, dir.path(), &objects()).unwrap_err().message,
            "serviceAccountToken projections are not supported yet"
        );
    }

    #[test]
    fn host_path_types() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("made");
        let f = dir.path().join("file");
        let p = pod(json!([
            {"name": "a", "hostPath": {"path": d, "type": "DirectoryOrCreate"}},
            {"name": "b", "hostPath": {"path": f, "type": "FileOrCreate"}},
        ]));
        let v = prep(&p, dir.path(), &objects()).unwrap();
        assert!(d.is_dir() && f.is_file());
        assert_eq!(v.paths["a"], d);
        assert!(v.read_only.is_empty());
        let check = |path: &Path, t: &str| {
            let p = pod(json!([{"name": "h", "hostPath": {"path": path, "type": t}}]));
            prep(&p, dir.path(), &objects())
                .map(|_| ())
                .map_err(|e| e.message)
        };
        assert_eq!(check(&d, "Directory"), Ok(()));
        assert_eq!(check(&f, "File"), Ok(()));
        assert_eq!(check(&dir.path().join("none"), ""), Ok(()));
        assert_eq!(
            check(&f, "Directory"),
            Err(format!(
                "hostPath type check failed: {} is not a directory",
                f.display()
            ))
        );
        assert_eq!(
            check(&d, "File"),
            Err(format!(
                "hostPath type check failed: {} is not a file",
                d.display()
            ))
        );
        assert_eq!(
            check(&f, "Socket"),
            Err(format!(
                "hostPath type check failed: {} is not a socket file",
                f.display()
            ))
        );
        assert_eq!(check(Path::new("/dev/null"), "CharDevice"), Ok(()));
        assert_eq!(
            check(Path::new("/dev/null"), "BlockDevice"),
            Err("hostPath type check failed: /dev/null is not a block device".into())
        );
        let sock = dir.path().join("sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert_eq!(check(&sock, "Socket"), Ok(()));
        assert_eq!(
            check(&f, "Bogus"),
            Err("Bogus is an invalid volume type".into())
        );
    }

    #[test]
    fn unsupported_types() {
        let dir = tempfile::tempdir().unwrap();
        let p = pod(json!([{"name": "data", "persistentVolumeClaim": {"claimName": "c"}}]));
        let e = prep(&p, dir.path(), &objects()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "MountVolume.SetUp failed for volume \"data\" : persistentVolumeClaim volumes are not supported by the process runtime"
        );
        let p = pod(json!([{"name": "n", "nfs": {"server": "s", "path": "/"}}]));
        assert_eq!(
            prep(&p, dir.path(), &objects()).unwrap_err().message,
            "nfs volumes are not supported by the process runtime"
        );
    }

    fn mount(name: &str, path: &str) -> VolumeMount {
        VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn mounts_and_sub_paths() {
        let dir = tempfile::tempdir().unwrap();
        let p = pod(json!([
            {"name": "scratch", "emptyDir": {}},
            {"name": "cfg", "configMap": {"name": "cm"}},
        ]));
        let v = prep(&p, dir.path(), &objects()).unwrap();
        let scratch = &v.paths["scratch"];
        assert_eq!(mode(scratch), 0o777);
        let c = Container {
            name: "app".into(),
            volume_mounts: Some(vec![
                mount("scratch", "/data"),
                VolumeMount {
                    sub_path: Some("a/b".into()),
                    read_only: Some(true),
                    ..mount("scratch", "/sub")
                },
                VolumeMount {
                    sub_path_expr: Some("logs/$(POD)".into()),
                    ..mount("scratch", "/logs")
                },
                mount("cfg", "/etc/cfg"),
                VolumeMount {
                    sub_path: Some("a".into()),
                    ..mount("cfg", "/etc/a")
                },
            ]),
            ..Default::default()
        };
        let env = vec![("POD".to_owned(), "web".to_owned())];
        let m = container_mounts(&c, &v, &env).unwrap();
        let canon = fs::canonicalize(scratch).unwrap();
        assert_eq!(m[0].host_path, *scratch);
        assert!(!m[0].read_only);
        assert_eq!(
            (m[1].host_path.clone(), m[1].read_only),
            (canon.join("a/b"), true)
        );
        assert!(canon.join("a/b").is_dir());
        assert_eq!(m[2].host_path, canon.join("logs/web"));
        assert_eq!(m[2].container_path, Path::new("/logs"));
        assert!(m[3].read_only, "configMap volumes are always read-only");
        assert_eq!(fs::read_to_string(&m[4].host_path).unwrap(), "A");
        assert!(m[4].read_only);

        let bad = |vm: VolumeMount| {
            let c = Container {
                name: "app".into(),
                volume_mounts: Some(vec![vm]),
                ..Default::default()
            };
            container_mounts(&c, &v, &env).unwrap_err().message
        };
        assert_eq!(
            bad(VolumeMount {
                sub_path: Some("../x".into()),
                ..mount("scratch", "/x")
            }),
            "unable to provision SubPath `../x`: must not contain '..'"
        );
        assert_eq!(
            bad(VolumeMount {
                sub_path: Some("/etc".into()),
                ..mount("scratch", "/x")
            }),
            "error SubPath `/etc` must not be an absolute path"
        );
        assert_eq!(
            bad(VolumeMount {
                sub_path_expr: Some("$(NOPE)/x".into()),
                ..mount("scratch", "/x")
            }),
            "missing value for NOPE"
        );
        assert_eq!(
            bad(mount("ghost", "/x")),
            "cannot find volume \"ghost\" to mount into container \"app\""
        );
        // A symlink out of the volume is refused.
        symlink("/etc", scratch.join("escape")).unwrap();
        let msg = bad(VolumeMount {
            sub_path: Some("escape/sub".into()),
            ..mount("scratch", "/x")
        });
        assert!(
            msg.starts_with("subpath \"/etc\" not within volume path"),
            "{msg}"
        );
        assert!(!Path::new("/etc/sub").exists());

        teardown(dir.path()).unwrap();
        assert!(!dir.path().join("volumes").exists());
        teardown(dir.path()).unwrap();
    }

    #[test]
    fn memory_volumes_are_tmpfs_when_root() {
        let dir = tempfile::tempdir().unwrap();
        let p = pod(json!([
            {"name": "m", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
            {"name": "s", "secret": {"secretName": "s"}},
        ]));
        let alloc = NodeAllocatable::default();
        let ctx = PodContext {
            pod: &p,
            host_ip: "",
            pod_ips: &[],
            node_allocatable: &alloc,
        };
        let v = prepare(&ctx, dir.path(), &objects()).unwrap();
        let m = &v.paths["m"];
        let sv = &v.paths["s"];
        assert!(m.is_dir());
        if nix::unistd::geteuid().is_root() && is_mount_point(m) {
            let st = nix::sys::statvfs::statvfs(m.as_path()).unwrap();
            assert_eq!(st.blocks() * st.fragment_size(), 1 << 20);
            // Secrets live on a tmpfs too.
            assert!(is_mount_point(sv));
            let target = fs::read_link(sv.join(DATA_DIR_LINK)).unwrap();
            // Idempotent: not mounted twice, not rewritten.
            prepare(&ctx, dir.path(), &objects()).unwrap();
            let count = |p: &Path| mounts_under(&fs::canonicalize(p).unwrap()).unwrap().len();
            assert_eq!((count(m), count(sv)), (1, 1));
            assert_eq!(fs::read_link(sv.join(DATA_DIR_LINK)).unwrap(), target);
        }
        assert_eq!(fs::read(sv.join("key")).unwrap(), vec![0, 159, 146, 150]);
        teardown(dir.path()).unwrap();
        assert!(!m.exists() && !sv.exists());
    }

    #[test]
    fn payload_paths_are_checked() {
        assert_eq!(clean_payload_path("./a//b").unwrap(), "a/b");
        assert!(clean_payload_path("../x").is_err());
        assert!(clean_payload_path("/x").is_err());
        assert!(clean_payload_path("..data").is_err());
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
    }
}

//! Cluster PKI and credentials, created at first start under `DIR/tls` and
//! reused afterwards: a CA, a serving certificate whose SANs cover every
//! address the server is reached at, the client certificate the server
//! presents to node agents, the admin bearer token, the node join token, and
//! `DIR/kubeconfig.yaml`.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Everything the server needs to speak TLS and authenticate clients.
pub struct Pki {
    pub ca_pem: String,
    /// The CA's private key: signs node certificates at join.
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// Bearer token of the cluster admin (`system:masters`).
    pub admin_token: String,
    /// The agent join token: `N10<sha256 of CA PEM>::node:<secret>`.
    pub node_token: String,
    /// Client certificate (and key) the server presents to node agents.
    pub kubelet_client_cert_pem: String,
    pub kubelet_client_key_pem: String,
}

/// Common name of the client certificate the API server presents to agents.
/// Must equal `navarch_agent::APISERVER_CLIENT_CN` (duplicated so that the
/// API server does not depend on the agent crate).
pub const APISERVER_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

impl Pki {
    /// The secret half of the node token (what agents present).
    pub fn node_secret(&self) -> &str {
        self.node_token.rsplit("::node:").next().unwrap_or("")
    }
}

fn random_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    hex::encode(bytes)
}

/// sha256 of the CA certificate PEM, hex: what a node token pins.
pub fn ca_hash(ca_pem: &str) -> String {
    hex::encode(Sha256::digest(ca_pem.as_bytes()))
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

fn read_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Names and addresses the serving certificate must cover.
pub fn default_sans(listen: &str, extra: &[String]) -> BTreeSet<String> {
    let mut sans: BTreeSet<String> = [
        "127.0.0.1",
        "localhost",
        "::1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            sans.insert(h.to_string());
        }
    }
    for ip in local_ips() {
        sans.insert(ip.to_string());
    }
    if let Some((host, _)) = listen.rsplit_once(':') {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if !host.is_empty() && host != "0.0.0.0" && host != "::" {
            sans.insert(host.to_string());
        }
    }
    sans.extend(extra.iter().cloned());
    sans
}

/// The machine's IPv4 addresses, from `/proc/net/fib_trie` (no extra crates, no IO beyond procfs).
pub fn local_ips() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(s) = std::fs::read_to_string("/proc/net/fib_trie") {
        let lines: Vec<&str> = s.lines().collect();
        for w in lines.windows(2) {
            if w[1].contains("/32 host LOCAL") {
                if let Some(ip) = w[0]
                    .split_whitespace()
                    .last()
                    .and_then(|t| t.parse::<IpAddr>().ok())
                {
                    if !out.contains(&ip) {
                        out.push(ip);
                    }
                }
            }
        }
    }
    out
}

fn san_entry(s: &str) -> Result<SanType> {
    Ok(match s.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(
            s.try_into()
                .with_context(|| format!("invalid DNS name in --tls-san: {s:?}"))?,
        ),
    })
}

/// Loads the PKI under `dir/tls`, creating what is missing. The serving
/// certificate is re-issued (by the same CA) when the wanted SANs change.
pub fn load_or_create(dir: &Path, sans: &BTreeSet<String>) -> Result<Pki> {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).with_context(|| format!("creating {}", tls.display()))?;
    let p = |n: &str| -> PathBuf { tls.join(n) };

    let (ca_pem, ca_key_pem) = match (read_opt(&p("ca.crt"))?, read_opt(&p("ca.key"))?) {
        (Some(c), Some(k)) => (c, k),
        _ => {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "navarch-ca");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let cert = params.self_signed(&key)?;
            write_private(&p("ca.key"), &key.serialize_pem())?;
            write_private(&p("ca.crt"), &cert.pem())?;
            (cert.pem(), key.serialize_pem())
        }
    };
    let ca_key = KeyPair::from_pem(&ca_key_pem).context("parsing tls/ca.key")?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).context("parsing tls/ca.crt")?;

    let wanted: String = sans.iter().cloned().collect::<Vec<_>>().join("\n");
    let serving = match (
        read_opt(&p("server.crt"))?,
        read_opt(&p("server.key"))?,
        read_opt(&p("server.sans"))?,
    ) {
        (Some(c), Some(k), Some(s)) if s == wanted => Some((c, k)),
        _ => None,
    };
    let (cert_pem, key_pem) = match serving {
        Some(x) => x,
        None => {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "navarch-apiserver");
            params.distinguished_name = dn;
            params.subject_alt_names = sans.iter().map(|s| san_entry(s)).collect::<Result<_>>()?;
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            let cert = params.signed_by(&key, &issuer)?;
            write_private(&p("server.key"), &key.serialize_pem())?;
            write_private(&p("server.crt"), &cert.pem())?;
            write_private(&p("server.sans"), &wanted)?;
            (cert.pem(), key.serialize_pem())
        }
    };

    let (kubelet_client_cert_pem, kubelet_client_key_pem) = match (
        read_opt(&p("apiserver-kubelet-client.crt"))?,
        read_opt(&p("apiserver-kubelet-client.key"))?,
    ) {
        (Some(c), Some(k)) => (c, k),
        _ => {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, APISERVER_CLIENT_CN);
            dn.push(DnType::OrganizationName, "system:masters");
            params.distinguished_name = dn;
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            let cert = params.signed_by(&key, &issuer)?;
            write_private(&p("apiserver-kubelet-client.key"), &key.serialize_pem())?;
            write_private(&p("apiserver-kubelet-client.crt"), &cert.pem())?;
            (cert.pem(), key.serialize_pem())
        }
    };

    let admin_token = match read_opt(&p("admin-token"))? {
        Some(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let t = random_secret();
            write_private(&p("admin-token"), &t)?;
            t
        }
    };
    let node_token = match read_opt(&dir.join("node-token"))? {
        Some(t) if t.trim().contains("::node:") => t.trim().to_string(),
        _ => {
            let t = format!("N10{}::node:{}", ca_hash(&ca_pem), random_secret());
            write_private(&dir.join("node-token"), &format!("{t}\n"))?;
            t
        }
    };
    Ok(Pki {
        ca_pem,
        ca_key_pem,
        cert_pem,
        key_pem,
        admin_token,
        node_token,
        kubelet_client_cert_pem,
        kubelet_client_key_pem,
    })
}

/// Writes an admin kubeconfig for `server_url` to `path`.
pub fn write_kubeconfig(path: &Path, server_url: &str, pki: &Pki) -> Result<()> {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(pki.ca_pem.as_bytes());
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: navarch\n  cluster:\n    server: {server_url}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {}\ncontexts:\n- name: navarch\n  context:\n    cluster: navarch\n    user: admin\n    namespace: default\ncurrent-context: navarch\npreferences: {{}}\n",
        pki.admin_token
    );
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    write_private(path, &yaml)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pki_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let sans = default_sans("127.0.0.1:6443", &["navarch.example".to_string()]);
        let a = load_or_create(dir.path(), &sans).unwrap();
        let b = load_or_create(dir.path(), &sans).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem);
        assert_eq!(a.cert_pem, b.cert_pem);
        assert_eq!(a.admin_token, b.admin_token);
        assert_eq!(a.node_token, b.node_token);
        assert_eq!(a.kubelet_client_cert_pem, b.kubelet_client_cert_pem);
        let der = rustls_pemfile::certs(&mut a.kubelet_client_cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let user = crate::auth::user_from_certificate(&der).unwrap();
        assert_eq!(user.name, APISERVER_CLIENT_CN);
        assert_eq!(user.groups, vec!["system:masters".to_string()]);
        let key_mode = std::fs::metadata(dir.path().join("tls/apiserver-kubelet-client.key"))
            .unwrap()
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(key_mode.mode() & 0o777, 0o600);
        assert!(a
            .node_token
            .starts_with(&format!("N10{}::node:", ca_hash(&a.ca_pem))));
        // A new SAN re-issues the serving cert with the same CA.
        let mut more = sans.clone();
        more.insert("10.9.9.9".into());
        let c = load_or_create(dir.path(), &more).unwrap();
        assert_eq!(a.ca_pem, c.ca_pem);
        assert_ne!(a.cert_pem, c.cert_pem);
        let mode = std::fs::metadata(dir.path().join("tls/ca.key"))
            .unwrap()
            .permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
    }
}

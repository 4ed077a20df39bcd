//! Joining a server with the node token (the client side of
//! `navarch_apiserver::join`).
//!
//! The token is `N10<sha256 hex of the CA PEM>::node:<secret>`. The agent
//! fetches `GET /cacerts` without verifying the server, checks the CA
//! against the hash (so a wrong server cannot impersonate the cluster), then
//! `POST /navarch/v1/join` over a connection that trusts only that CA, with
//! two CSRs for keys it generated itself: a client certificate
//! (`system:node:<name>`, group `system:nodes`, for every API call) and a
//! serving certificate for its own HTTPS port.
//!
//! Everything is kept under `data_dir/pki` (`ca.crt`, `client.crt`,
//! `client.key`, `serving.crt`, `serving.key`; keys and the directory are
//! private) and reused on the next start while it still fits: same CA as the
//! token, same node name, same serving names, more than 30 days left.

use base64::Engine;
use rcgen::{CertificateParams, KeyPair, SanType};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Path of the server's CA endpoint.
pub const CACERTS_PATH: &str = "/cacerts";
/// Path of the server's join endpoint.
pub const JOIN_PATH: &str = "/navarch/v1/join";
/// Saved certificates closer than this to expiry are renewed by joining again.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// How to join.
#[derive(Clone)]
pub struct JoinOptions {
    /// `https://host:port` of the API server.
    pub server: String,
    /// The node token, `N10<ca hash>::node:<secret>`.
    pub token: String,
    pub node_name: String,
    /// IP addresses and DNS names for the serving certificate.
    pub serving_sans: Vec<String>,
    /// Where `pki/` is kept.
    pub data_dir: PathBuf,
}

/// What a node holds after joining (PEM throughout).
#[derive(Clone)]
pub struct Credentials {
    pub server: String,
    pub ca_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
}

impl std::fmt::Debug for Credentials {
    // Keys stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("malformed node token: expected N10<ca hash>::node:<secret>")]
    MalformedToken,
    #[error("invalid server url {0:?}: expected https://host:port")]
    InvalidServer(String),
    #[error("invalid serving name {0:?}: expected an IP address or a DNS name")]
    InvalidSan(String),
    #[error("cannot reach the server at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("the server's CA does not match the token: wrong token or wrong server")]
    CaMismatch,
    #[error("the server rejected the node token")]
    Rejected,
    #[error("the server refused the join request ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("invalid answer from the server: {0}")]
    InvalidResponse(String),
    #[error("generating keys: {0}")]
    Keys(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("building the API client configuration: {0}")]
    Config(String),
}

/// The two halves of a node token.
struct Token<'a> {
    ca_hash: &'a str,
}

fn parse_token(token: &str) -> Result<Token<'_>, JoinError> {
    let rest = token
        .trim()
        .strip_prefix("N10")
        .ok_or(JoinError::MalformedToken)?;
    let (hash, secret) = rest
        .split_once("::node:")
        .ok_or(JoinError::MalformedToken)?;
    let hex_ok = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex_ok || secret.is_empty() {
        return Err(JoinError::MalformedToken);
    }
    Ok(Token { ca_hash: hash })
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The chain of an error's messages, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let m = x.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = x.source();
    }
    s
}

/// Requested serving names, normalised (IPs canonical, DNS names lowercase).
fn wanted_sans(sans: &[String]) -> Result<BTreeSet<String>, JoinError> {
    sans.iter()
        .map(|s| match s.trim().parse::<IpAddr>() {
            Ok(ip) => Ok(ip.to_string()),
            Err(_) => {
                let name = s.trim().to_ascii_lowercase();
                let ok = !name.is_empty()
                    && name.len() <= 253
                    && name.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
                    });
                if ok {
                    Ok(name)
                } else {
                    Err(JoinError::InvalidSan(s.clone()))
                }
            }
        })
        .collect()
}

fn pki_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pki")
}

/// Joins (or reuses saved credentials that still fit) and returns the
/// node's credentials.
pub async fn join(opts: &JoinOptions) -> Result<Credentials, JoinError> {
    let token = parse_token(&opts.token)?;
    let server = opts.server.trim_end_matches('/').to_string();
    if !server.starts_with("https://") || server.len() <= "https://".len() {
        return Err(JoinError::InvalidServer(opts.server.clone()));
    }
    let sans = wanted_sans(&opts.serving_sans)?;
    if let Some(saved) = load_saved(opts, &server, token.ca_hash, &sans) {
        tracing::debug!(node = %opts.node_name, "reusing saved node certificates");
        return Ok(saved);
    }

    // The CA, unverified, then pinned by the token's hash.
    let insecure = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| JoinError::Config(chain(&e)))?;
    let url = format!("{server}{CACERTS_PATH}");
    let unreachable = |url: &str, e: reqwest::Error| JoinError::Unreachable {
        url: url.to_string(),
        message: chain(&e),
    };
    let resp = insecure
        .get(&url)
        .send()
        .await
        .map_err(|e| unreachable(&url, e))?;
    if !resp.status().is_success() {
        return Err(JoinError::InvalidResponse(format!(
            "GET {url} answered {}",
            resp.status()
        )));
    }
    let ca_pem = resp.text().await.map_err(|e| unreachable(&url, e))?;
    if !sha256_hex(&ca_pem).eq_ignore_ascii_case(token.ca_hash) {
        return Err(JoinError::CaMismatch);
    }

    let client_key = KeyPair::generate().map_err(|e| JoinError::Keys(e.to_string()))?;
    let serving_key = KeyPair::generate().map_err(|e| JoinError::Keys(e.to_string()))?;
    let csr = |key: &KeyPair, sans: Vec<SanType>| -> Result<String, JoinError> {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("system:node:{}", opts.node_name),
        );
        p.subject_alt_names = sans;
        p.serialize_request(key)
            .and_then(|r| r.pem())
            .map_err(|e| JoinError::Keys(e.to_string()))
    };
    let san_types = sans
        .iter()
        .map(|s| match s.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => s
                .as_str()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|_| JoinError::InvalidSan(s.clone())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let body = serde_json::json!({
        "nodeName": opts.node_name,
        "clientCsr": csr(&client_key, Vec::new())?,
        "servingCsr": csr(&serving_key, san_types)?,
    });

    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes())
        .map_err(|e| JoinError::InvalidResponse(format!("the server's CA: {}", chain(&e))))?;
    let pinned = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| JoinError::Config(chain(&e)))?;
    let url = format!("{server}{JOIN_PATH}");
    let resp = pinned
        .post(&url)
        .bearer_auth(opts.token.trim())
        .json(&body)
        .send()
        .await
        .map_err(|e| unreachable(&url, e))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| unreachable(&url, e))?;
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(JoinError::Rejected);
    }
    let doc: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| JoinError::InvalidResponse(format!("POST {url} answered {status}: {e}")))?;
    if !status.is_success() {
        return Err(JoinError::Refused {
            status: status.as_u16(),
            message: doc["message"].as_str().unwrap_or(&text).to_string(),
        });
    }
    let field = |k: &str| {
        doc[k]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| JoinError::InvalidResponse(format!("{k} is missing")))
    };
    let creds = Credentials {
        server,
        ca_pem,
        client_cert_pem: field("clientCertificate")?,
        client_key_pem: client_key.serialize_pem(),
        serving_cert_pem: field("servingCertificate")?,
        serving_key_pem: serving_key.serialize_pem(),
    };
    // The answer must fit what was asked, or it is not saved.
    check(&creds, &opts.node_name, &sans).map_err(JoinError::InvalidResponse)?;
    save(&opts.data_dir, &creds)?;
    tracing::info!(node = %opts.node_name, "joined the cluster");
    Ok(creds)
}

/// Saved credentials, if they all exist and still fit.
fn load_saved(
    opts: &JoinOptions,
    server: &str,
    ca_hash: &str,
    sans: &BTreeSet<String>,
) -> Option<Credentials> {
    let dir = pki_dir(&opts.data_dir);
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).ok();
    let creds = Credentials {
        server: server.to_string(),
        ca_pem: read("ca.crt")?,
        client_cert_pem: read("client.crt")?,
        client_key_pem: read("client.key")?,
        serving_cert_pem: read("serving.crt")?,
        serving_key_pem: read("serving.key")?,
    };
    if !sha256_hex(&creds.ca_pem).eq_ignore_ascii_case(ca_hash) {
        return None;
    }
    match check(&creds, &opts.node_name, sans) {
        Ok(()) => Some(creds),
        Err(why) => {
            tracing::info!(reason = %why, "joining again");
            None
        }
    }
}

/// Checks certificates against the node name, serving names, their keys
/// and `RENEW_BEFORE`.
fn check(c: &Credentials, node: &str, sans: &BTreeSet<String>) -> Result<(), String> {
    let renew_at = jiff::Timestamp::now().as_second() + RENEW_BEFORE.as_secs() as i64;
    let parse =
        |pem: &str, key_pem: &str, what: &str| -> Result<(String, BTreeSet<String>), String> {
            let der = rustls_pemfile::certs(&mut pem.as_bytes())
                .next()
                .and_then(Result::ok)
                .ok_or_else(|| format!("{what} is not a PEM certificate"))?;
            let (_, cert) =
                x509_parser::parse_x509_certificate(&der).map_err(|e| format!("{what}: {e}"))?;
            if cert.validity().not_after.timestamp() < renew_at {
                return Err(format!("{what} expires within 30 days"));
            }
            let key = KeyPair::from_pem(key_pem).map_err(|e| format!("{what} key: {e}"))?;
            if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
                return Err(format!("{what} does not match its key"));
            }
            let cn = cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|c| c.as_str().ok())
                .unwrap_or("")
                .to_string();
            let mut names = BTreeSet::new();
            if let Ok(Some(ext)) = cert.subject_alternative_name() {
                for n in &ext.value.general_names {
                    match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => {
                            names.insert(d.to_ascii_lowercase());
                        }
                        x509_parser::extensions::GeneralName::IPAddress(b) => {
                            let ip = match b.len() {
                                4 => <[u8; 4]>::try_from(*b).map(IpAddr::from).ok(),
                                16 => <[u8; 16]>::try_from(*b).map(IpAddr::from).ok(),
                                _ => None,
                            };
                            if let Some(ip) = ip {
                                names.insert(ip.to_string());
                            }
                        }
                        _ => {}
                    }
                }
            }
            Ok((cn, names))
        };
    let user = format!("system:node:{node}");
    let (cn, _) = parse(
        &c.client_cert_pem,
        &c.client_key_pem,
        "the client certificate",
    )?;
    if cn != user {
        return Err(format!(
            "the client certificate is for {cn:?}, not {user:?}"
        ));
    }
    let (_, names) = parse(
        &c.serving_cert_pem,
        &c.serving_key_pem,
        "the serving certificate",
    )?;
    if &names != sans {
        return Err("the serving certificate's names differ from the requested ones".into());
    }
    Ok(())
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), JoinError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| JoinError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn save(data_dir: &Path, c: &Credentials) -> Result<(), JoinError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = pki_dir(data_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|source| JoinError::Io {
            path: dir.clone(),
            source,
        })?;
    write_file(&dir.join("client.key"), &c.client_key_pem, 0o600)?;
    write_file(&dir.join("serving.key"), &c.serving_key_pem, 0o600)?;
    write_file(&dir.join("client.crt"), &c.client_cert_pem, 0o644)?;
    write_file(&dir.join("serving.crt"), &c.serving_cert_pem, 0o644)?;
    // Last: a complete set is what makes the saved credentials usable.
    write_file(&dir.join("ca.crt"), &c.ca_pem, 0o644)
}

impl Credentials {
    /// A `kube::Config` authenticating as the node with its client certificate.
    pub fn kube_config(&self) -> Result<kube::Config, JoinError> {
        let url: http::Uri = self
            .server
            .parse()
            .map_err(|_| JoinError::InvalidServer(self.server.clone()))?;
        let ca_der = rustls_pemfile::certs(&mut self.ca_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| JoinError::Config(format!("the CA certificate: {e}")))?
            .into_iter()
            .map(|c| c.to_vec())
            .collect::<Vec<_>>();
        if ca_der.is_empty() {
            return Err(JoinError::Config("no CA certificate".into()));
        }
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        // `AuthInfo` keeps the key in a secret string type; build it through
        // its kubeconfig form rather than naming that type.
        let auth_info: kube::config::AuthInfo = serde_json::from_value(serde_json::json!({
            "client-certificate-data": b64(&self.client_cert_pem),
            "client-key-data": b64(&self.client_key_pem),
        }))
        .map_err(|e| JoinError::Config(e.to_string()))?;
        let mut config = kube::Config::new(url);
        config.root_cert = Some(ca_der);
        config.auth_info = auth_info;
        Ok(config)
    }

    /// A kube client for the API server, as this node.
    pub async fn kube_client(&self) -> Result<kube::Client, JoinError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        kube::Client::try_from(self.kube_config()?).map_err(|e| JoinError::Config(chain(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_or_name_the_expected_shape() {
        let h = "a".repeat(64);
        assert_eq!(
            parse_token(&format!("N10{h}::node:s3cret\n"))
                .unwrap()
                .ca_hash,
            h
        );
        for bad in [
            "".to_string(),
            "s3cret".to_string(),
            format!("K10{h}::node:x"),
            format!("N10{h}::node:"),
            "N10abc::node:x".to_string(),
            format!("N10{h}::server:x"),
        ] {
            let e = parse_token(&bad).err().unwrap();
            assert_eq!(
                e.to_string(),
                "malformed node token: expected N10<ca hash>::node:<secret>"
            );
        }
    }

    #[test]
    fn serving_names_normalise() {
        let s = wanted_sans(&["10.0.0.1".into(), "Node-1.Example".into(), "::1".into()]).unwrap();
        assert_eq!(
            s.into_iter().collect::<Vec<_>>(),
            vec!["10.0.0.1", "::1", "node-1.example"]
        );
        assert!(matches!(
            wanted_sans(&["a b".into()]),
            Err(JoinError::InvalidSan(_))
        ));
    }
}

//! Where the API server is and how to authenticate to it: from a kubeconfig
//! (any Kubernetes API server) or by joining with a Navarch node token.

use crate::Error;
use base64::Engine;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An API server and the credentials to call it with.
#[derive(Clone)]
pub struct Target {
    /// `https://host:port`, without a trailing slash.
    pub server: String,
    /// CA bundle (PEM) to verify the server with; the system roots otherwise.
    pub ca_pem: Option<Vec<u8>>,
    /// Bearer token.
    pub token: Option<String>,
    /// Client certificate and its key, concatenated (PEM).
    pub identity_pem: Option<Vec<u8>>,
    /// Skip verifying the server's certificate.
    pub insecure: bool,
}

impl std::fmt::Debug for Target {
    // Credentials stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("server", &self.server)
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

fn kubeconfig_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Kubeconfig {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Inline base64 `*-data`, else the file named by `file_key` (relative to the
/// kubeconfig's directory), else `None`.
fn data_or_file(
    path: &Path,
    obj: &Value,
    data_key: &str,
    file_key: &str,
) -> Result<Option<Vec<u8>>, Error> {
    if let Some(d) = obj[data_key].as_str() {
        return base64::engine::general_purpose::STANDARD
            .decode(d.trim())
            .map(Some)
            .map_err(|_| kubeconfig_error(path, format!("{data_key} is not base64")));
    }
    if let Some(f) = obj[file_key].as_str() {
        return read(&relative_to(path, f)).map(Some);
    }
    Ok(None)
}

/// A path from a kubeconfig: relative ones are relative to its directory.
fn relative_to(kubeconfig: &Path, f: &str) -> PathBuf {
    let f = PathBuf::from(f);
    match (f.is_relative(), kubeconfig.parent()) {
        (true, Some(dir)) => dir.join(f),
        _ => f,
    }
}

impl Target {
    /// The current context of a kubeconfig: server, CA, and a bearer token
    /// (`token`, `tokenFile`) or client certificate (`client-certificate[-data]`
    /// with `client-key[-data]`).
    pub fn from_kubeconfig(path: &Path) -> Result<Target, Error> {
        let text =
            String::from_utf8(read(path)?).map_err(|_| kubeconfig_error(path, "not UTF-8 text"))?;
        let v: Value =
            serde_saphyr::from_str(&text).map_err(|e| kubeconfig_error(path, e.to_string()))?;
        let ctx_name = v["current-context"]
            .as_str()
            .ok_or_else(|| kubeconfig_error(path, "no current-context"))?;
        let ctx = v["contexts"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == ctx_name))
            .ok_or_else(|| kubeconfig_error(path, format!("context {ctx_name:?} not found")))?;
        let cluster_name = &ctx["context"]["cluster"];
        let user_name = &ctx["context"]["user"];
        let cluster = v["clusters"]
            .as_array()
            .and_then(|a| a.iter().find(|c| &c["name"] == cluster_name))
            .ok_or_else(|| kubeconfig_error(path, format!("cluster {cluster_name} not found")))?;
        let user = v["users"]
            .as_array()
            .and_then(|a| a.iter().find(|c| &c["name"] == user_name))
            .map(|u| u["user"].clone())
            .unwrap_or(Value::Null);
        let c = &cluster["cluster"];
        let ca_pem = data_or_file(
            path,
            c,
            "certificate-authority-data",
            "certificate-authority",
        )?;
        let token = match user["token"].as_str() {
            Some(t) => Some(t.to_string()),
            None => match user["tokenFile"].as_str() {
                Some(f) => Some(
                    String::from_utf8_lossy(&read(&relative_to(path, f))?)
                        .trim()
                        .to_string(),
                ),
                None => None,
            },
        };
        let cert = data_or_file(path, &user, "client-certificate-data", "client-certificate")?;
        let key = data_or_file(path, &user, "client-key-data", "client-key")?;
        let identity_pem = match (cert, key) {
            (Some(mut c), Some(k)) => {
                if !c.ends_with(b"\n") {
                    c.push(b'\n');
                }
                c.extend_from_slice(&k);
                Some(c)
            }
            (None, None) => None,
            _ => {
                return Err(kubeconfig_error(
                    path,
                    "a client certificate needs both the certificate and its key",
                ))
            }
        };
        Ok(Target {
            server: c["server"]
                .as_str()
                .ok_or_else(|| kubeconfig_error(path, "the cluster has no server"))?
                .trim_end_matches('/')
                .to_string(),
            ca_pem,
            token,
            identity_pem,
            insecure: c["insecure-skip-tls-verify"].as_bool().unwrap_or(false),
        })
    }

    /// Joins a Navarch server with its node token (as `navarch agent` does,
    /// once, as node `node_name`) and calls it with the client certificate
    /// it was given. The certificates are kept under `data_dir/pki` and
    /// reused by the next join while they fit.
    pub async fn join(
        server: &str,
        token: &str,
        node_name: &str,
        data_dir: &Path,
    ) -> Result<Target, Error> {
        let opts = navarch_agent::join::JoinOptions {
            server: server.to_string(),
            token: token.trim().to_string(),
            node_name: node_name.to_string(),
            serving_sans: vec![node_name.to_string()],
            data_dir: data_dir.to_path_buf(),
        };
        let creds = navarch_agent::join::join(&opts)
            .await
            .map_err(|source| Error::Join {
                node: node_name.to_string(),
                source,
            })?;
        let mut identity = creds.client_cert_pem.into_bytes();
        if !identity.ends_with(b"\n") {
            identity.push(b'\n');
        }
        identity.extend_from_slice(creds.client_key_pem.as_bytes());
        Ok(Target {
            server: creds.server,
            ca_pem: Some(creds.ca_pem.into_bytes()),
            token: None,
            identity_pem: Some(identity),
            insecure: false,
        })
    }

    /// A client builder with this target's TLS trust and credentials, and
    /// nothing else set (HTTP/1.1 only).
    pub fn client_builder(&self) -> Result<reqwest::ClientBuilder, Error> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .http1_only()
            .connect_timeout(Duration::from_secs(10));
        if let Some(ca) = &self.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(ca).map_err(Error::Client)? {
                b = b.add_root_certificate(cert);
            }
        }
        if self.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        if let Some(id) = &self.identity_pem {
            b = b.identity(reqwest::Identity::from_pem(id).map_err(Error::Client)?);
        }
        if let Some(t) = &self.token {
            let mut h = reqwest::header::HeaderMap::new();
            let value = format!("Bearer {t}")
                .parse()
                .map_err(|_| Error::InvalidToken)?;
            h.insert(reqwest::header::AUTHORIZATION, value);
            b = b.default_headers(h);
        }
        Ok(b)
    }

    /// A client with its own connection pool (one HTTPS connection per
    /// concurrent request) and a 120 s request timeout.
    pub fn client(&self) -> Result<reqwest::Client, Error> {
        self.client_builder()?
            .pool_max_idle_per_host(4)
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(Error::Client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B64_CERT: &str = "Q0VSVAo="; // "CERT\n"
    const B64_KEY: &str = "S0VZCg=="; // "KEY\n"

    fn kubeconfig(dir: &Path, user: &str, cluster: &str) -> PathBuf {
        let p = dir.join("config");
        std::fs::write(
            &p,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: other\n  context: {{cluster: x, user: x}}\n- name: c\n  context: {{cluster: k, user: u}}\nclusters:\n- name: k\n  cluster:\n    server: https://10.0.0.1:6443/\n{cluster}users:\n- name: u\n  user:\n{user}"
            ),
        )
        .unwrap();
        p
    }

    #[test]
    fn kubeconfig_files_are_relative_to_it_and_tokens_or_certificates_authenticate() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "CA").unwrap();
        std::fs::write(dir.path().join("tok"), "secret\n").unwrap();
        let p = kubeconfig(
            dir.path(),
            "    tokenFile: tok\n",
            "    certificate-authority: ca.pem\n",
        );
        let t = Target::from_kubeconfig(&p).unwrap();
        assert_eq!(t.server, "https://10.0.0.1:6443");
        assert_eq!(t.ca_pem.as_deref(), Some(&b"CA"[..]));
        assert_eq!(t.token.as_deref(), Some("secret"));
        assert!(t.identity_pem.is_none() && !t.insecure);

        let p = kubeconfig(
            dir.path(),
            &format!("    client-certificate-data: {B64_CERT}\n    client-key-data: {B64_KEY}\n"),
            "    insecure-skip-tls-verify: true\n",
        );
        let t = Target::from_kubeconfig(&p).unwrap();
        assert_eq!(t.identity_pem.as_deref(), Some(&b"CERT\nKEY\n"[..]));
        assert!(t.insecure && t.token.is_none());
    }

    #[test]
    fn kubeconfig_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = kubeconfig(
            dir.path(),
            &format!("    client-certificate-data: {B64_CERT}\n"),
            "",
        );
        let e = Target::from_kubeconfig(&p).unwrap_err().to_string();
        assert!(e.contains("needs both the certificate and its key"), "{e}");
        let p = kubeconfig(
            dir.path(),
            "    token: t\n",
            "    certificate-authority: missing.pem\n",
        );
        let e = Target::from_kubeconfig(&p).unwrap_err().to_string();
        assert!(e.contains("missing.pem"), "{e}");
        std::fs::write(&p, "current-context: nope\n").unwrap();
        let e = Target::from_kubeconfig(&p).unwrap_err().to_string();
        assert!(e.contains("context \"nope\" not found"), "{e}");
    }
}

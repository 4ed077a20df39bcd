//! Node join: how an agent holding the node token gets certificates.
//!
//! - `GET /cacerts` (unauthenticated) answers the cluster CA PEM. The agent
//!   fetches it without verification and pins it with the sha256 hash the
//!   node token carries (`N10<hash>::node:<secret>`), as k3s does.
//! - `POST /navarch/v1/join` with `Authorization: Bearer <node token>` and
//!   `{"nodeName", "clientCsr", "servingCsr"}` answers
//!   `{"ca", "clientCertificate", "servingCertificate"}`: a client
//!   certificate for `system:node:<nodeName>` in `system:nodes` (what the
//!   agent then uses for every API call) and a serving certificate for the
//!   agent's own HTTPS port with the IP and DNS names the CSR asks for.
//!
//! The node token is accepted here only; it gives no other API access.

use crate::auth::constant_time_eq;
use crate::pki::Pki;
use navarch_api::ApiError;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde::Deserialize;
use serde_json::{json, Value};

/// Path of the join endpoint.
pub const JOIN_PATH: &str = "/navarch/v1/join";
/// Path of the CA endpoint.
pub const CACERTS_PATH: &str = "/cacerts";

/// Group of every node identity.
pub const NODES_GROUP: &str = "system:nodes";

/// Signs node certificates with the cluster CA for holders of the node token.
pub(crate) struct Joiner {
    ca_pem: String,
    ca_key_pem: String,
    node_token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinRequest {
    node_name: String,
    client_csr: String,
    serving_csr: String,
}

impl Joiner {
    pub(crate) fn new(pki: &Pki) -> Joiner {
        Joiner {
            ca_pem: pki.ca_pem.clone(),
            ca_key_pem: pki.ca_key_pem.clone(),
            node_token: pki.node_token.clone(),
        }
    }

    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Whether an `Authorization` header value carries the node token.
    pub(crate) fn token_ok(&self, authorization: Option<&str>) -> bool {
        let Some(token) = authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::trim)
        else {
            return false;
        };
        constant_time_eq(token.as_bytes(), self.node_token.as_bytes())
    }

    /// Handles an authenticated join request body; the reply document.
    pub(crate) fn join(&self, body: &[u8]) -> Result<Value, ApiError> {
        let req: JoinRequest = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding join request: {e}")))?;
        let errs = navarch_api::kinds::validation::is_dns1123_subdomain(&req.node_name);
        if !errs.is_empty() {
            return Err(ApiError::bad_request(format!(
                "invalid nodeName {:?}: {}",
                req.node_name,
                errs.join("; ")
            )));
        }
        let client = parse_csr("clientCsr", &req.client_csr)?;
        let serving = parse_csr("servingCsr", &req.serving_csr)?;
        let mut sans = Vec::new();
        for san in &serving.params.subject_alt_names {
            match san {
                SanType::DnsName(_) | SanType::IpAddress(_) => sans.push(san.clone()),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "servingCsr asks for an unsupported subject alternative name {other:?}: only DNS names and IP addresses are allowed"
                    )))
                }
            }
        }
        if sans.is_empty() {
            return Err(ApiError::bad_request(
                "servingCsr has no subject alternative names: it must name the node's IP addresses or DNS names",
            ));
        }

        let ca_key = KeyPair::from_pem(&self.ca_key_pem)
            .map_err(|e| ApiError::internal(format!("loading the cluster CA key: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_pem, ca_key)
            .map_err(|e| ApiError::internal(format!("loading the cluster CA: {e}")))?;

        let user = format!("system:node:{}", req.node_name);
        let client_cert = node_params(&user, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)?
            .signed_by(&client.public_key, &issuer)
            .map_err(|e| ApiError::internal(format!("signing the client certificate: {e}")))?;
        let serving_cert = node_params(&user, sans, ExtendedKeyUsagePurpose::ServerAuth)?
            .signed_by(&serving.public_key, &issuer)
            .map_err(|e| ApiError::internal(format!("signing the serving certificate: {e}")))?;
        tracing::info!(node = %req.node_name, "node joined");
        Ok(json!({
            "ca": self.ca_pem,
            "clientCertificate": client_cert.pem(),
            "servingCertificate": serving_cert.pem(),
        }))
    }
}

fn parse_csr(field: &str, pem: &str) -> Result<CertificateSigningRequestParams, ApiError> {
    if pem.trim().is_empty() {
        return Err(ApiError::bad_request(format!("{field} is required")));
    }
    CertificateSigningRequestParams::from_pem(pem).map_err(|e| {
        ApiError::bad_request(format!(
            "{field} is not a valid PEM certificate signing request: {e}"
        ))
    })
}

/// Parameters of a node certificate valid for one year from today.
fn node_params(
    common_name: &str,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams, ApiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, NODES_GROUP);
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let ymd = |d: jiff::civil::Date| {
        rcgen::date_time_ymd(d.year().into(), d.month() as u8, d.day() as u8)
    };
    let bad = |e: jiff::Error| ApiError::internal(format!("computing certificate validity: {e}"));
    // From yesterday (clock skew) to a year from today.
    params.not_before = ymd(today.yesterday().map_err(bad)?);
    params.not_after = ymd(today
        .checked_add(jiff::Span::new().days(365))
        .map_err(bad)?);
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joiner() -> (tempfile::TempDir, Joiner) {
        let dir = tempfile::tempdir().unwrap();
        let sans = crate::pki::default_sans("127.0.0.1:6443", &[]);
        let pki = crate::pki::load_or_create(dir.path(), &sans).unwrap();
        let j = Joiner::new(&pki);
        (dir, j)
    }

    fn csr(sans: Vec<SanType>) -> String {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.subject_alt_names = sans;
        p.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn signs_node_certificates() {
        let (_d, j) = joiner();
        assert!(j.token_ok(Some(&format!("Bearer {}", j.node_token))));
        assert!(!j.token_ok(Some("Bearer N10abc::node:nope")));
        assert!(!j.token_ok(None));
        let body = json!({
            "nodeName": "node-1",
            "clientCsr": csr(vec![]),
            "servingCsr": csr(vec![SanType::IpAddress("10.0.0.1".parse().unwrap()), SanType::DnsName("node-1".try_into().unwrap())]),
        });
        let out = j.join(body.to_string().as_bytes()).unwrap();
        let pem = out["clientCertificate"].as_str().unwrap();
        let der = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let user = crate::auth::user_from_certificate(&der).unwrap();
        assert_eq!(user.name, "system:node:node-1");
        assert_eq!(user.groups, vec![NODES_GROUP.to_string()]);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
            / 86400;
        assert_eq!(days, 366);
        assert!(
            cert.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .client_auth
        );

        let pem = out["servingCertificate"].as_str().unwrap();
        let der = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(
            cert.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .server_auth
        );
        assert_eq!(
            cert.subject_alternative_name()
                .unwrap()
                .unwrap()
                .value
                .general_names
                .len(),
            2
        );
    }

    #[test]
    fn rejects_bad_requests() {
        let (_d, j) = joiner();
        let ok = csr(vec![SanType::IpAddress("10.0.0.1".parse().unwrap())]);
        let cases = [
            ("{not json".to_string(), "error decoding join request"),
            (
                json!({"nodeName": "Bad_Name", "clientCsr": ok, "servingCsr": ok}).to_string(),
                "invalid nodeName \"Bad_Name\"",
            ),
            (
                json!({"nodeName": "n", "clientCsr": "garbage", "servingCsr": ok}).to_string(),
                "clientCsr is not a valid PEM certificate signing request",
            ),
            (
                json!({"nodeName": "n", "clientCsr": ok, "servingCsr": csr(vec![SanType::Rfc822Name("a@b.c".try_into().unwrap())])}).to_string(),
                "servingCsr asks for an unsupported subject alternative name",
            ),
            (
                json!({"nodeName": "n", "clientCsr": ok, "servingCsr": csr(vec![])}).to_string(),
                "servingCsr has no subject alternative names",
            ),
        ];
        for (body, want) in cases {
            let e = j.join(body.as_bytes()).unwrap_err();
            assert_eq!(e.code, 400, "{body}");
            assert!(
                e.message.contains(want),
                "{} does not contain {want}",
                e.message
            );
        }
    }
}

//! Authentication (bearer tokens, client certificates) and the authorization
//! seam. Authorization is "authenticated = allowed" for now; an RBAC
//! authorizer plugs in behind `Authorizer`.

use std::collections::HashMap;

/// Who a request is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// What a request wants to do, for authorization.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

pub trait Authorizer: Send + Sync {
    /// `Err(reason)` denies.
    fn authorize(&self, user: &User, attrs: &Attributes<'_>) -> Result<(), String>;
}

/// Every authenticated user may do everything (until RBAC lands).
pub struct AllowAuthenticated;

impl Authorizer for AllowAuthenticated {
    fn authorize(&self, _user: &User, _attrs: &Attributes<'_>) -> Result<(), String> {
        Ok(())
    }
}

/// Static bearer tokens.
#[derive(Default)]
pub struct TokenAuthenticator {
    tokens: HashMap<String, User>,
}

impl TokenAuthenticator {
    pub fn add(&mut self, token: &str, user: User) {
        self.tokens.insert(token.to_string(), user);
    }

    /// Looks a token up in constant time per candidate.
    pub fn authenticate(&self, token: &str) -> Option<User> {
        let mut found = None;
        for (t, u) in &self.tokens {
            if constant_time_eq(t.as_bytes(), token.as_bytes()) {
                found = Some(u.clone());
            }
        }
        found
    }
}

/// Compares secrets without an early exit on the first differing byte.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The user named by a verified client certificate: CN is the name, O the groups.
pub fn user_from_certificate(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(User { name, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_exactly() {
        let mut a = TokenAuthenticator::default();
        a.add(
            "secret",
            User {
                name: "admin".into(),
                groups: vec!["system:masters".into()],
            },
        );
        assert_eq!(a.authenticate("secret").unwrap().name, "admin");
        assert!(a.authenticate("secre").is_none());
        assert!(a.authenticate("").is_none());
    }
}

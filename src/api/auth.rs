//! Read-API access control: bearer tokens matched by SHA-256, roles and tenant confinement.
//!
//! With no tokens configured every request is an unrestricted admin; config validation
//! only allows that on a loopback address.

use crate::config::{ApiRole, ApiToken};

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Token name (or hash prefix); `local` without tokens.
    pub name: String,
    pub role: ApiRole,
    pub tenant: Option<String>,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == ApiRole::Admin
    }

    /// May this principal see a record of `tenant`?
    pub fn may_see(&self, tenant: Option<&str>) -> bool {
        match &self.tenant {
            None => true,
            Some(mine) => tenant == Some(mine.as_str()),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: Vec<ApiToken>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token: send Authorization: Bearer <token>")]
    Missing,
    #[error("unknown or malformed bearer token")]
    Invalid,
}

impl Auth {
    pub fn new(tokens: Vec<ApiToken>) -> Auth {
        Auth { tokens }
    }

    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        if self.tokens.is_empty() {
            return Ok(Principal {
                name: "local".into(),
                role: ApiRole::Admin,
                tenant: None,
            });
        }
        let header = authorization.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Invalid)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let found = self
            .tokens
            .iter()
            .find(|t| t.sha256[..] == *digest.as_ref())
            .ok_or(AuthError::Invalid)?;
        Ok(Principal {
            name: found.name.clone(),
            role: found.role,
            tenant: found.tenant.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(raw: &str, role: ApiRole, tenant: Option<&str>) -> ApiToken {
        let d = ring::digest::digest(&ring::digest::SHA256, raw.as_bytes());
        ApiToken {
            name: raw.to_uppercase(),
            sha256: d.as_ref().try_into().unwrap(),
            role,
            tenant: tenant.map(str::to_string),
        }
    }

    #[test]
    fn bearer_tokens_resolve_to_principals() {
        let auth = Auth::new(vec![
            token("adm", ApiRole::Admin, None),
            token("view", ApiRole::Viewer, Some("acme")),
        ]);
        assert_eq!(auth.authenticate(None), Err(AuthError::Missing));
        assert_eq!(
            auth.authenticate(Some("Bearer nope")),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            auth.authenticate(Some("Basic adm")),
            Err(AuthError::Invalid)
        );
        let p = auth.authenticate(Some("Bearer view")).unwrap();
        assert_eq!((p.name.as_str(), p.role), ("VIEW", ApiRole::Viewer));
        assert!(p.may_see(Some("acme")) && !p.may_see(Some("other")) && !p.may_see(None));
        assert!(auth.authenticate(Some("Bearer adm")).unwrap().is_admin());
        assert!(Auth::default().authenticate(None).unwrap().is_admin());
    }
}

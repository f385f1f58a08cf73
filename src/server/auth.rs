//! Bearer-token authentication and least-privilege roles.
//!
//! The tokens file holds SHA-256 hashes of tokens, never tokens:
//!
//! ```toml
//! [[tokens]]
//! name = "chat-backend"           # the actor name in audit logs
//! sha256 = "<64 hex digits>"      # `shredstore hash-token` prints it
//! roles = ["append", "read"]      # any of append, read, erase, admin
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

use super::ServerError;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Append and AppendStream.
    Append,
    /// Read.
    Read,
    /// Erase.
    Erase,
    /// The Admin service.
    Admin,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Append => "append",
            Role::Read => "read",
            Role::Erase => "erase",
            Role::Admin => "admin",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    sha256: String,
    roles: Vec<Role>,
}

struct Token {
    name: String,
    hash: [u8; 32],
    roles: Vec<Role>,
}

/// Checks bearer tokens against the configured hashes.
pub struct Auth {
    tokens: Vec<Token>,
    insecure: bool,
    /// Failed authentications by reason (see [`AuthFailure`]).
    failures: [AtomicU64; 3],
}

/// Why a call failed authentication (a metric label; never the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `authorization` header.
    MissingToken,
    /// A header that is not `Bearer <token>`.
    Malformed,
    /// A token that matches no entry.
    UnknownToken,
}

impl AuthFailure {
    /// Every reason, in counter order.
    pub const ALL: [AuthFailure; 3] = [
        AuthFailure::MissingToken,
        AuthFailure::Malformed,
        AuthFailure::UnknownToken,
    ];

    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            AuthFailure::MissingToken => "missing_token",
            AuthFailure::Malformed => "malformed",
            AuthFailure::UnknownToken => "unknown_token",
        }
    }
}

/// The SHA-256 of a token, as hex (what the tokens file stores).
pub fn hash_token(token: &str) -> String {
    hex_lower(&Sha256::digest(token.as_bytes()))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim().as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

impl Auth {
    /// Loads a tokens file.
    ///
    /// # Errors
    /// If the file can't be read or parsed, a hash is malformed, or a name repeats.
    pub fn from_file(path: &Path) -> Result<Auth, ServerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServerError::Config(format!("tokens file {}: {e}", path.display())))?;
        Self::from_toml(&text)
            .map_err(|e| ServerError::Config(format!("tokens file {}: {e}", path.display())))
    }

    fn from_toml(text: &str) -> Result<Auth, String> {
        let file: TokensFile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut tokens: Vec<Token> = Vec::with_capacity(file.tokens.len());
        for t in file.tokens {
            let hash = parse_hex32(&t.sha256)
                .ok_or_else(|| format!("token {:?}: sha256 must be 64 hex digits", t.name))?;
            if t.name.is_empty() || tokens.iter().any(|o| o.name == t.name) {
                return Err(format!(
                    "token names must be non-empty and unique: {:?}",
                    t.name
                ));
            }
            tokens.push(Token {
                name: t.name,
                hash,
                roles: t.roles,
            });
        }
        if tokens.is_empty() {
            return Err("no tokens defined".into());
        }
        Ok(Auth {
            tokens,
            insecure: false,
            failures: Default::default(),
        })
    }

    /// Accepts every call (development only).
    pub fn insecure() -> Auth {
        Auth {
            tokens: Vec::new(),
            insecure: true,
            failures: Default::default(),
        }
    }

    /// Failed authentications since start, by reason.
    pub fn failures(&self) -> [(AuthFailure, u64); 3] {
        AuthFailure::ALL.map(|r| (r, self.failures[r as usize].load(Ordering::Relaxed)))
    }

    fn fail(&self, reason: AuthFailure, message: &'static str) -> Status {
        self.failures[reason as usize].fetch_add(1, Ordering::Relaxed);
        Status::unauthenticated(message)
    }

    /// The token entry of the bearer token in `headers`.
    fn token(&self, headers: &tonic::codegen::http::HeaderMap) -> Result<&Token, Status> {
        let header = headers
            .get("authorization")
            .ok_or_else(|| self.fail(AuthFailure::MissingToken, "missing bearer token"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .ok_or_else(|| {
                self.fail(
                    AuthFailure::Malformed,
                    "authorization must be `Bearer <token>`",
                )
            })?;
        let hash: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        // Compare against every entry in constant time; no early exit.
        let mut found: Option<&Token> = None;
        for t in &self.tokens {
            if bool::from(t.hash.ct_eq(&hash)) {
                found = Some(t);
            }
        }
        found.ok_or_else(|| self.fail(AuthFailure::UnknownToken, "unknown token"))
    }

    /// Checks that `headers` carry a known bearer token (any role). The
    /// server's gate runs this before a request body is read.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` for a missing, malformed or unknown token.
    pub fn authenticate(&self, headers: &tonic::codegen::http::HeaderMap) -> Result<(), Status> {
        if self.insecure {
            return Ok(());
        }
        self.token(headers).map(|_| ())
    }

    /// Authenticates `request` (any role) and returns who is calling, so a
    /// service can check roles itself, name the caller in an audit record
    /// when it lacks one, or grant more to a token with an extra role.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` for a missing, malformed or unknown token.
    pub fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        if self.insecure {
            return Ok(Caller {
                name: "anonymous".to_owned(),
                roles: None,
            });
        }
        let t = self.token(request.metadata().as_ref())?;
        Ok(Caller {
            name: t.name.clone(),
            roles: Some(t.roles.clone()),
        })
    }

    /// Authenticates `request` and checks it carries `role`; returns the actor
    /// name for the audit log.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` for a missing or unknown token, `PERMISSION_DENIED`
    /// for a token without the role.
    pub fn check<T>(&self, request: &Request<T>, role: Role) -> Result<String, Status> {
        let caller = self.caller(request)?;
        caller.require(role)?;
        Ok(caller.name)
    }
}

/// An authenticated caller: its token's name and roles.
#[derive(Debug, Clone)]
pub struct Caller {
    name: String,
    /// `None` without authentication (`--insecure-no-auth`): every role.
    roles: Option<Vec<Role>>,
}

impl Caller {
    /// The token's name (the actor in audit records; `anonymous` without
    /// authentication).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the token has `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.as_ref().is_none_or(|r| r.contains(&role))
    }

    /// Checks the token has `role`.
    ///
    /// # Errors
    /// `PERMISSION_DENIED` naming the token and the role.
    pub fn require(&self, role: Role) -> Result<(), Status> {
        if self.has(role) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "token {:?} lacks the {} role",
                self.name,
                role.name()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::from_toml(&format!(
            "[[tokens]]\nname = \"reader\"\nsha256 = \"{}\"\nroles = [\"read\"]\n",
            hash_token("s3cret")
        ))
        .unwrap()
    }

    fn req(token: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(t) = token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    }

    #[test]
    fn roles_and_tokens_are_checked() {
        let a = auth();
        assert_eq!(a.check(&req(Some("s3cret")), Role::Read).unwrap(), "reader");
        let code = |r: Result<String, Status>| r.unwrap_err().code();
        assert_eq!(
            code(a.check(&req(Some("s3cret")), Role::Erase)),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            code(a.check(&req(Some("wrong")), Role::Read)),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            code(a.check(&req(None), Role::Read)),
            tonic::Code::Unauthenticated
        );
        // A caller is known whatever its roles.
        let c = a.caller(&req(Some("s3cret"))).unwrap();
        assert_eq!(c.name(), "reader");
        assert!(c.has(Role::Read) && !c.has(Role::Admin));
        assert_eq!(
            a.caller(&req(Some("wrong"))).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let failures = a.failures();
        assert_eq!(failures[0], (AuthFailure::MissingToken, 1));
        assert_eq!(failures[2], (AuthFailure::UnknownToken, 2));
        let anyone = Auth::insecure().caller(&req(None)).unwrap();
        assert_eq!(anyone.name(), "anonymous");
        assert!(anyone.has(Role::Admin));
    }

    #[test]
    fn bad_tokens_files_are_rejected() {
        assert!(Auth::from_toml("").is_err());
        assert!(Auth::from_toml("[[tokens]]\nname=\"a\"\nsha256=\"zz\"\nroles=[]\n").is_err());
        assert!(
            Auth::from_toml("[[tokens]]\nname=\"a\"\nsha256=\"00\"\nroles=[\"root\"]\n").is_err()
        );
        let h = hash_token("x");
        let dup = format!(
            "[[tokens]]\nname=\"a\"\nsha256=\"{h}\"\nroles=[]\n[[tokens]]\nname=\"a\"\nsha256=\"{h}\"\nroles=[]\n"
        );
        assert!(Auth::from_toml(&dup).is_err());
    }
}

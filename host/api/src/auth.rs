//! Who may do what: bearer tokens, kept in `settle.toml` as SHA-256 hashes,
//! each with a name and a role.
//!
//! - `submitter`: submit runs, read the runs it submitted, report on them;
//! - `viewer`: read everything;
//! - `operator`: everything, operator actions and flow changes included.
//!
//! No tokens configured means no authentication, which the host allows
//! only on a loopback address (checked at start). A missing or unknown
//! token is 401, a token whose role does not allow the route 403. Tokens
//! are compared by hash in constant time and never logged. Each token has
//! its own submission rate limit.

use crate::problem::Problem;
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Submitter,
    Viewer,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Submitter => "submitter",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }

    pub fn allows(self, need: Need) -> bool {
        matches!(
            (self, need),
            (_, Need::Nothing)
                | (Role::Operator, _)
                | (Role::Viewer, Need::Read | Need::ReadRun)
                | (Role::Submitter, Need::Submit | Need::ReadRun | Need::Report)
        )
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "submitter" => Ok(Role::Submitter),
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            _ => Err(format!(
                "unknown role '{s}' (one of: submitter, viewer, operator)"
            )),
        }
    }
}

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Need {
    /// Open to anyone (health, the dashboard's page itself).
    Nothing,
    /// Read anything: listings, flows, plugins, metrics.
    Read,
    /// Read one run: a submitter only the runs it submitted.
    ReadRun,
    /// Submit a run.
    Submit,
    /// Report on a run: a submitter only on the runs it submitted.
    Report,
    /// Act on runs, change flows.
    Operate,
}

/// One configured token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Recorded with what the token does (never the token itself).
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the token (`settle token new` prints it).
    pub sha256: String,
    /// Most submissions per second, sustained (a burst of as many is allowed).
    #[serde(default = "default_rate")]
    pub submit_per_second: u32,
}

fn default_rate() -> u32 {
    200
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's name; `local` when authentication is off.
    pub name: String,
    pub role: Role,
}

/// The configured tokens and their rate limiters.
#[derive(Debug, Default)]
pub struct Auth {
    tokens: Vec<(TokenConfig, [u8; 32])>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Auth {
    /// Tokens from configuration; an unreadable hash is an error naming the token.
    pub fn new(tokens: &[TokenConfig]) -> Result<Self, String> {
        let mut parsed = Vec::new();
        for t in tokens {
            let bytes = hex::decode(t.sha256.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    format!(
                        "token '{}': sha256 must be 64 hex digits (run `settle token new` for a line to paste)",
                        t.name
                    )
                })?;
            if parsed
                .iter()
                .any(|(p, _): &(TokenConfig, [u8; 32])| p.name == t.name)
            {
                return Err(format!(
                    "two tokens are named '{}': a token's name says who did what (and who may approve), so each needs its own",
                    t.name
                ));
            }
            parsed.push((t.clone(), bytes));
        }
        Ok(Auth {
            tokens: parsed,
            buckets: Mutex::default(),
        })
    }

    /// Whether any token is configured (otherwise everyone is an operator).
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Who sent `headers`, if anyone may call: 401 otherwise.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, Problem> {
        if !self.enabled() {
            return Ok(Caller {
                name: "local".into(),
                role: Role::Operator,
            });
        }
        let unauthorized = |detail: &str| {
            Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail.to_string())
        };
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized(
                "this host needs a token: send `Authorization: Bearer <token>`",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every configured hash is compared, each in constant time.
        let mut found = None;
        for (config, expected) in &self.tokens {
            if constant_time_eq(&hash, expected) {
                found = Some(config);
            }
        }
        match found {
            Some(t) => Ok(Caller {
                name: t.name.clone(),
                role: t.role,
            }),
            None => Err(unauthorized("the token is not known to this host")),
        }
    }

    /// Takes one submission from the caller's budget: 429 when it is spent.
    pub fn admit_submission(&self, caller: &Caller) -> Result<(), Problem> {
        let Some((config, _)) = self.tokens.iter().find(|(t, _)| t.name == caller.name) else {
            return Ok(());
        };
        let rate = f64::from(config.submit_per_second.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let bucket = buckets.entry(caller.name.clone()).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(rate);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - bucket.tokens) / rate).ceil().max(1.0);
        Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!(
                "token '{}' may submit {} runs per second; try again in {wait} s",
                caller.name, config.submit_per_second
            ),
        )
        .with("retry_after_s", serde_json::json!(wait)))
    }
}

/// Compares two hashes without stopping at the first difference.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new random token and the hash to configure: `(token, sha256 hex)`.
pub fn new_token() -> Result<(String, String), String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a token: {e}"))?;
    let token = format!("stl_{}", hex::encode(bytes));
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    Ok((token, hash))
}

/// 403 for a caller whose role does not allow `need`.
pub fn forbidden(caller: &Caller, need: Need) -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "token '{}' has role {}, which may not {}",
            caller.name,
            caller.role.as_str(),
            match need {
                Need::Nothing | Need::Read | Need::ReadRun => "read this",
                Need::Submit => "submit runs",
                Need::Report => "report on this run",
                Need::Operate => "act on runs or change flows (operator only)",
            }
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_with(role: Role) -> (Auth, String) {
        let (token, sha256) = new_token().unwrap();
        let auth = Auth::new(&[TokenConfig {
            name: "t".into(),
            role,
            sha256,
            submit_per_second: 2,
        }])
        .unwrap();
        (auth, token)
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn a_configured_token_is_known_and_others_are_not() {
        let (auth, token) = auth_with(Role::Viewer);
        assert_eq!(auth.caller(&bearer(&token)).unwrap().role, Role::Viewer);
        assert_eq!(auth.caller(&bearer("stl_wrong")).unwrap_err().status, 401);
        assert_eq!(auth.caller(&HeaderMap::new()).unwrap_err().status, 401);
    }

    #[test]
    fn roles_allow_what_they_say() {
        assert!(Role::Submitter.allows(Need::Submit));
        assert!(!Role::Submitter.allows(Need::Read));
        assert!(!Role::Submitter.allows(Need::Operate));
        assert!(Role::Viewer.allows(Need::Read));
        assert!(!Role::Viewer.allows(Need::Submit));
        assert!(!Role::Viewer.allows(Need::Operate));
        assert!(Role::Operator.allows(Need::Operate));
    }

    #[test]
    fn the_rate_limit_refuses_a_burst_past_the_budget() {
        let (auth, token) = auth_with(Role::Submitter);
        let caller = auth.caller(&bearer(&token)).unwrap();
        assert!(auth.admit_submission(&caller).is_ok());
        assert!(auth.admit_submission(&caller).is_ok());
        assert_eq!(auth.admit_submission(&caller).unwrap_err().status, 429);
    }

    #[test]
    fn a_bad_hash_is_refused_with_the_tokens_name() {
        let err = Auth::new(&[TokenConfig {
            name: "ci".into(),
            role: Role::Viewer,
            sha256: "zz".into(),
            submit_per_second: 1,
        }])
        .unwrap_err();
        assert!(err.contains("token 'ci'"), "{err}");
    }
}

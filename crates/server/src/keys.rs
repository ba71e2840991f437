//! API keys: `afk_<id>_<secret>`, where the id (12 hex digits) is public and names the key in
//! lists, logs and audit events, and the secret is 256 random bits. Only the SHA-256 of the
//! secret is stored: with that much entropy a slow password hash adds nothing, and the check
//! stays cheap on every request. Secrets are compared in constant time.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KeyScope {
    /// Submit and cancel runs.
    #[serde(rename = "runs:write")]
    RunsWrite,
    /// Read runs, their reports and events.
    #[serde(rename = "runs:read")]
    RunsRead,
    /// Use the code-safety scanner.
    #[serde(rename = "scan")]
    Scan,
    /// The OpenAI-compatible chat endpoint.
    #[serde(rename = "chat")]
    Chat,
    /// Upload designs for analysis (spends provider money).
    #[serde(rename = "designer")]
    Designer,
    /// Everything, including key management.
    #[serde(rename = "admin")]
    Admin,
}

impl KeyScope {
    /// Every scope with its name.
    pub const ALL: [(KeyScope, &'static str); 6] = [
        (KeyScope::RunsWrite, "runs:write"),
        (KeyScope::RunsRead, "runs:read"),
        (KeyScope::Scan, "scan"),
        (KeyScope::Chat, "chat"),
        (KeyScope::Designer, "designer"),
        (KeyScope::Admin, "admin"),
    ];

    /// The name used in requests, the store and the CLI.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("?", |(_, n)| n)
    }
}

impl fmt::Display for KeyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyScope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(s.trim()))
            .map(|(scope, _)| *scope)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|(_, n)| *n).collect();
                format!("unknown scope `{s}`: use {}", names.join(", "))
            })
    }
}

/// A set of scopes; `admin` implies every other.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scopes(pub Vec<KeyScope>);

impl Scopes {
    /// Whether these scopes allow `wanted`.
    pub fn allows(&self, wanted: KeyScope) -> bool {
        self.0.iter().any(|s| *s == wanted || *s == KeyScope::Admin)
    }

    /// Comma-separated names, as stored.
    pub fn to_list(&self) -> String {
        let names: Vec<&str> = self.0.iter().map(|s| s.as_str()).collect();
        names.join(",")
    }

    /// Parses comma-separated names.
    pub fn parse_list(list: &str) -> Result<Self, String> {
        let mut scopes: Vec<KeyScope> = list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        scopes.sort();
        scopes.dedup();
        Ok(Scopes(scopes))
    }
}

/// The prefix every key starts with (so secret scanners and people recognise one).
pub const KEY_PREFIX: &str = "afk_";

/// A newly created key: the full text is shown once and never stored.
pub struct NewKey {
    /// The public id.
    pub id: String,
    /// The full key, `afk_<id>_<secret>`.
    pub key: String,
    /// The SHA-256 of the secret part, hex.
    pub hash: String,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("id", &self.id)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

/// The operating system's random generator failed.
#[derive(Debug, thiserror::Error)]
#[error("no randomness available for a new key: {0}")]
pub struct RandomError(String);

/// Makes a new key from the operating system's random generator.
pub fn generate() -> Result<NewKey, RandomError> {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id).map_err(|e| RandomError(e.to_string()))?;
    getrandom::fill(&mut secret).map_err(|e| RandomError(e.to_string()))?;
    let id = hex(&id);
    let secret = hex(&secret);
    Ok(NewKey {
        key: format!("{KEY_PREFIX}{id}_{secret}"),
        hash: hash_secret(&secret),
        id,
    })
}

/// Splits a presented key into its id and secret, when it has the right shape.
pub fn parse(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hexish = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hexish(id, 12) && hexish(secret, 64)).then_some((id, secret))
}

/// The stored form of a secret.
pub fn hash_secret(secret: &str) -> String {
    format!("{:x}", Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` hashes to `stored`, compared in constant time.
pub fn verify(secret: &str, stored: &str) -> bool {
    hash_secret(secret)
        .as_bytes()
        .ct_eq(stored.as_bytes())
        .into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_parses_and_verifies_and_only_its_hash_is_kept() {
        let k = generate().expect("random");
        let (id, secret) = parse(&k.key).expect("shape");
        assert_eq!(id, k.id);
        assert!(verify(secret, &k.hash));
        assert!(!k.hash.contains(secret));
        let mut wrong = secret.as_bytes().to_vec();
        wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
        assert!(!verify(&String::from_utf8(wrong).expect("hex"), &k.hash));
        assert!(!format!("{k:?}").contains(secret), "Debug hides the key");
        let other = generate().expect("random");
        assert_ne!(k.key, other.key);
    }

    #[test]
    fn malformed_keys_are_not_parsed() {
        for bad in [
            "",
            "afk_",
            "sk-123",
            "afk_0123456789ab",
            "afk_0123456789ab_short",
            "afk_0123456789ag_0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn admin_implies_every_scope_and_names_round_trip() {
        let s = Scopes::parse_list("runs:read, scan").expect("parses");
        assert!(s.allows(KeyScope::Scan) && !s.allows(KeyScope::RunsWrite));
        assert!(Scopes(vec![KeyScope::Admin]).allows(KeyScope::RunsWrite));
        assert_eq!(Scopes::parse_list(&s.to_list()).expect("round trip"), s);
        let err = Scopes::parse_list("runs:delete").expect_err("unknown");
        assert!(err.contains("runs:write"), "{err}");
    }
}

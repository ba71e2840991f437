//! Bandit's weak-cryptography tests: B324 (hashlib/crypt) and B505 (weak keys).

use rustpython_parser::ast;

use super::{kw_value, pos};
use crate::finding::{Confidence as C, Severity as S};
use crate::rules::Analyzer;
use crate::rules::catalog as r;
use crate::rules::literal::{Lit, arg_value};

const WEAK_HASHES: &[&str] = &["md4", "md5", "sha", "sha1"];
pub(super) const WEAK_CRYPT: &[&str] = &["METHOD_CRYPT", "METHOD_MD5", "METHOD_BLOWFISH"];

fn key_size(c: &ast::ExprCall, kw: &str, position: usize) -> Lit {
    let v = kw_value(c, kw)
        .filter(Lit::truthy)
        .unwrap_or_else(|| pos(c, position));
    if v.truthy() { v } else { Lit::Int(2048) }
}

fn curve_bits(name: &str) -> Option<i128> {
    Some(match name {
        "SECT571K1" => 571,
        "SECT571R1" => 570,
        "SECP521R1" => 521,
        "BrainpoolP512R1" => 512,
        "SECT409K1" | "SECT409R1" => 409,
        "BrainpoolP384R1" | "SECP384R1" => 384,
        "SECT283K1" | "SECT283R1" => 283,
        "BrainpoolP256R1" | "SECP256K1" | "SECP256R1" => 256,
        "SECT233K1" | "SECT233R1" => 233,
        "SECP224R1" => 224,
        "SECP192R1" => 192,
        "SECT163K1" | "SECT163R2" => 163,
        _ => return None,
    })
}

impl Analyzer<'_> {
    pub(in crate::rules) fn hashlib(&mut self, c: &ast::ExprCall, func: &str) {
        let for_security = || kw_value(c, "usedforsecurity").is_none_or(|v| v.is("True"));
        let weak = if WEAK_HASHES.contains(&func) {
            Some(func.to_uppercase())
        } else if func == "new" {
            let name = if c.args.is_empty() {
                kw_value(c, "name")
            } else {
                Some(pos(c, 0))
            };
            name.and_then(|n| n.as_str().map(str::to_owned))
                .filter(|n| WEAK_HASHES.contains(&n.to_lowercase().as_str()))
                .map(|n| n.to_uppercase())
        } else {
            None
        };
        if let Some(h) = weak
            && for_security()
        {
            self.emit(
                &r::B324,
                c.range,
                format!("Use of weak {h} hash for security. Consider usedforsecurity=False"),
            );
        }
    }

    pub(in crate::rules) fn weak_key(&mut self, c: &ast::ExprCall, qual: &str) {
        let (kind, size) = match qual {
            "cryptography.hazmat.primitives.asymmetric.dsa.generate_private_key" => {
                ("DSA", key_size(c, "key_size", 0))
            }
            "cryptography.hazmat.primitives.asymmetric.rsa.generate_private_key" => {
                ("RSA", key_size(c, "key_size", 1))
            }
            "cryptography.hazmat.primitives.asymmetric.ec.generate_private_key" => {
                let curve = kw_value(c, "curve")
                    .filter(Lit::truthy)
                    .or_else(|| c.args.first().map(arg_value));
                let bits = curve
                    .as_ref()
                    .and_then(Lit::as_str)
                    .and_then(curve_bits)
                    .unwrap_or(224);
                ("EC", Lit::Int(bits))
            }
            "Crypto.PublicKey.DSA.generate" | "Cryptodome.PublicKey.DSA.generate" => {
                ("DSA", key_size(c, "bits", 0))
            }
            "Crypto.PublicKey.RSA.generate" | "Cryptodome.PublicKey.RSA.generate" => {
                ("RSA", key_size(c, "bits", 0))
            }
            _ => return,
        };
        let size = match size {
            Lit::Int(i) => i as f64,
            Lit::Float(f) => f,
            _ => return,
        };
        let (high, medium) = if kind == "EC" {
            (160, 224)
        } else {
            (1024, 2048)
        };
        for (limit, sev) in [(high, S::High), (medium, S::Medium)] {
            if size < f64::from(limit) {
                self.emit_rated(
                    &r::B505,
                    sev,
                    C::High,
                    c.range,
                    format!("{kind} key sizes below {limit} bits are considered breakable. "),
                    None,
                );
                return;
            }
        }
    }
}

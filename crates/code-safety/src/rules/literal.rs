//! Bandit's view of argument values (`Context._get_literal_value`): constants, containers of
//! constants, names as their identifier, attributes (in call arguments) as their last name.

use rustpython_parser::ast::{self, Constant, Expr};

/// A Python value as bandit sees it; `Unknown` is bandit's `None` (not a literal).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    /// A string, or `True`/`False`/`None` spelled as bandit stringifies them, or a name.
    Str(String),
    /// An integer that fits in 128 bits.
    Int(i128),
    /// A float.
    Float(f64),
    /// A list, tuple or set of literals.
    Seq(Vec<Lit>),
    /// A dict, bytes or other constant bandit keeps as an object.
    Opaque,
    /// Not a literal.
    Unknown,
}

impl Lit {
    /// Python truthiness, for bandit's `a or b or default`.
    pub(crate) fn truthy(&self) -> bool {
        match self {
            Lit::Str(s) => !s.is_empty(),
            Lit::Int(i) => *i != 0,
            Lit::Float(f) => *f != 0.0,
            Lit::Seq(v) => !v.is_empty(),
            Lit::Opaque => true,
            Lit::Unknown => false,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Lit::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn is(&self, s: &str) -> bool {
        self.as_str() == Some(s)
    }

    /// Python `str()` of the value, for messages.
    pub(crate) fn display(&self) -> String {
        match self {
            Lit::Str(s) => s.clone(),
            Lit::Int(i) => i.to_string(),
            Lit::Float(f) => f.to_string(),
            Lit::Seq(v) => format!(
                "[{}]",
                v.iter()
                    .map(|l| format!("'{}'", l.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Lit::Opaque => "<object>".to_owned(),
            Lit::Unknown => "None".to_owned(),
        }
    }
}

/// `_get_literal_value`.
pub(crate) fn literal(e: &Expr) -> Lit {
    match e {
        Expr::Constant(c) => constant(&c.value),
        Expr::List(l) => Lit::Seq(l.elts.iter().map(literal).collect()),
        Expr::Tuple(t) => Lit::Seq(t.elts.iter().map(literal).collect()),
        Expr::Set(s) => Lit::Seq(s.elts.iter().map(literal).collect()),
        Expr::Dict(_) => Lit::Opaque,
        Expr::Name(n) => Lit::Str(n.id.to_string()),
        _ => Lit::Unknown,
    }
}

/// Bandit's call-argument value: an attribute's last name, otherwise the literal.
pub(crate) fn arg_value(e: &Expr) -> Lit {
    match e {
        Expr::Attribute(a) => Lit::Str(a.attr.to_string()),
        _ => literal(e),
    }
}

pub(crate) fn constant(c: &Constant) -> Lit {
    match c {
        Constant::None => Lit::Str("None".into()),
        Constant::Bool(true) => Lit::Str("True".into()),
        Constant::Bool(false) => Lit::Str("False".into()),
        Constant::Str(s) => Lit::Str(s.clone()),
        Constant::Int(i) => i.to_string().parse::<i128>().map_or(Lit::Opaque, Lit::Int),
        Constant::Float(f) => Lit::Float(*f),
        Constant::Tuple(_) | Constant::Bytes(_) | Constant::Complex { .. } | Constant::Ellipsis => {
            Lit::Opaque
        }
    }
}

/// The string of a string constant expression.
pub(crate) fn const_str(e: &Expr) -> Option<&str> {
    match e {
        Expr::Constant(ast::ExprConstant {
            value: Constant::Str(s),
            ..
        }) => Some(s),
        _ => None,
    }
}

/// Python `str()` of a constant, for bandit's password messages.
pub(crate) fn constant_text(c: &Constant) -> String {
    match c {
        Constant::None => "None".into(),
        Constant::Bool(b) => if *b { "True" } else { "False" }.into(),
        Constant::Str(s) => s.clone(),
        Constant::Int(i) => i.to_string(),
        Constant::Float(f) => f.to_string(),
        Constant::Bytes(b) => format!("b'{}'", String::from_utf8_lossy(b)),
        Constant::Complex { real, imag } => format!("({real}+{imag}j)"),
        Constant::Tuple(_) => "(...)".into(),
        Constant::Ellipsis => "Ellipsis".into(),
    }
}

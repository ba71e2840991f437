//! Bandit's injection tests: B602–B607 and B609 (processes and shells), B610 (Django
//! `extra`) and the taint check behind B703 (`mark_safe`).

use rustpython_parser::ast::{self, Constant, Expr, Ranged};

use super::{kw_is, kw_line, pos};
use crate::finding::{Confidence as C, Severity as S};
use crate::rules::catalog as r;
use crate::rules::literal::{Lit, const_str};
use crate::rules::{Analyzer, keyword};

const SUBPROCESS: &[&str] = &[
    "subprocess.Popen",
    "subprocess.call",
    "subprocess.check_call",
    "subprocess.check_output",
    "subprocess.run",
];
const SHELL: &[&str] = &[
    "os.system",
    "os.popen",
    "os.popen2",
    "os.popen3",
    "os.popen4",
    "popen2.popen2",
    "popen2.popen3",
    "popen2.popen4",
    "popen2.Popen3",
    "popen2.Popen4",
    "commands.getoutput",
    "commands.getstatusoutput",
    "subprocess.getoutput",
    "subprocess.getstatusoutput",
];
const NO_SHELL: &[&str] = &[
    "os.execl",
    "os.execle",
    "os.execlp",
    "os.execlpe",
    "os.execv",
    "os.execve",
    "os.execvp",
    "os.execvpe",
    "os.spawnl",
    "os.spawnle",
    "os.spawnlp",
    "os.spawnlpe",
    "os.spawnv",
    "os.spawnve",
    "os.spawnvp",
    "os.spawnvpe",
    "os.startfile",
];

/// Bandit's `has_shell`.
fn has_shell(c: &ast::ExprCall) -> bool {
    let Some(k) = keyword(c, "shell") else {
        return false;
    };
    match &k.value {
        Expr::Constant(k) => match &k.value {
            Constant::Bool(b) => *b,
            Constant::Int(i) => i.to_string() != "0",
            Constant::Float(f) => *f != 0.0,
            Constant::Complex { real, imag } => *real != 0.0 || *imag != 0.0,
            Constant::Str(s) => !s.is_empty(),
            Constant::Bytes(b) => !b.is_empty(),
            Constant::None => false,
            Constant::Tuple(t) => !t.is_empty(),
            Constant::Ellipsis => true,
        },
        Expr::List(l) => !l.elts.is_empty(),
        Expr::Dict(d) => !d.keys.is_empty(),
        _ => true,
    }
}

fn assignments_to<'e>(
    body: &'e [ast::Stmt],
    name: &str,
    before: rustpython_parser::text_size::TextSize,
    out: &mut Vec<&'e Expr>,
) {
    for s in body {
        if s.range().start() >= before {
            break;
        }
        match s {
            ast::Stmt::Assign(a) => {
                if let Some(Expr::Name(t)) = a.targets.first()
                    && t.id.as_str() == name
                {
                    out.push(&a.value);
                }
            }
            ast::Stmt::AugAssign(a) => {
                if matches!(a.target.as_ref(), Expr::Name(t) if t.id.as_str() == name) {
                    out.push(&a.value);
                }
            }
            ast::Stmt::If(i) => {
                assignments_to(&i.body, name, before, out);
                assignments_to(&i.orelse, name, before, out);
            }
            ast::Stmt::For(f) => {
                assignments_to(&f.body, name, before, out);
                assignments_to(&f.orelse, name, before, out);
            }
            ast::Stmt::While(w) => {
                assignments_to(&w.body, name, before, out);
                assignments_to(&w.orelse, name, before, out);
            }
            ast::Stmt::With(w) => assignments_to(&w.body, name, before, out),
            ast::Stmt::Try(t) => {
                assignments_to(&t.body, name, before, out);
                for h in &t.handlers {
                    let ast::ExceptHandler::ExceptHandler(h) = h;
                    assignments_to(&h.body, name, before, out);
                }
                assignments_to(&t.orelse, name, before, out);
                assignments_to(&t.finalbody, name, before, out);
            }
            _ => {}
        }
    }
}

impl Analyzer<'_> {
    pub(in crate::rules) fn shell(&mut self, c: &ast::ExprCall, qual: &str) {
        let range = c.range;
        let in_sub = SUBPROCESS.contains(&qual);
        let in_shell = SHELL.contains(&qual);
        let in_no_shell = NO_SHELL.contains(&qual);
        let shell = has_shell(c);
        let literal_cmd = c.args.first().and_then(const_str).is_some();
        let shell_line = kw_line(c, "shell");
        if in_sub && shell && !c.args.is_empty() {
            if literal_cmd {
                self.emit_rated(&r::B602, S::Low, C::High, range,
                    "subprocess call with shell=True seems safe, but may be changed in the future, consider rewriting without shell", shell_line);
            } else {
                self.emit_rated(
                    &r::B602,
                    S::High,
                    C::High,
                    range,
                    "subprocess call with shell=True identified, security issue.",
                    shell_line,
                );
            }
        }
        if in_sub && !shell {
            self.emit_rated(
                &r::B603,
                S::Low,
                C::High,
                range,
                "subprocess call - check for execution of untrusted input.",
                shell_line,
            );
        }
        if !in_sub && shell {
            self.emit_rated(
                &r::B604,
                S::Medium,
                C::Low,
                range,
                "Function call with shell=True parameter identified, possible security issue.",
                shell_line,
            );
        }
        if in_shell && !c.args.is_empty() {
            if literal_cmd {
                self.emit_rated(&r::B605, S::Low, C::High, range,
                    "Starting a process with a shell: Seems safe, but may be changed in the future, consider rewriting without shell", None);
            } else {
                self.emit_rated(
                    &r::B605,
                    S::High,
                    C::High,
                    range,
                    "Starting a process with a shell, possible injection detected, security issue.",
                    None,
                );
            }
        }
        if in_no_shell {
            self.emit(&r::B606, range, "Starting a process without a shell.");
        }
        if !c.args.is_empty() && (in_sub || in_shell || in_no_shell) {
            let mut node = &c.args[0];
            if let Expr::List(l) = node
                && let Some(f) = l.elts.first()
            {
                node = f;
            }
            if let Some(s) = const_str(node) {
                let mut ch = s.chars();
                let full = match ch.next() {
                    Some('\\' | '/' | '.') => true,
                    Some(c0) if c0.is_ascii_alphabetic() => ch.next() == Some(':'),
                    _ => false,
                };
                if !full {
                    self.emit(
                        &r::B607,
                        range,
                        "Starting a process with a partial executable path",
                    );
                }
            }
        }
        // B609
        if (in_shell || (in_sub && kw_is(c, "shell", &["True"]) == Some(true)))
            && !c.args.is_empty()
        {
            let text = match pos(c, 0) {
                Lit::Seq(items) => items.iter().map(|i| format!(" {}", i.display())).collect(),
                Lit::Str(s) => s,
                _ => String::new(),
            };
            if !text.is_empty()
                && text.contains('*')
                && ["chown", "chmod", "tar", "rsync"]
                    .iter()
                    .any(|f| text.contains(f))
            {
                self.emit_rated(
                    &r::B609,
                    S::High,
                    C::Medium,
                    range,
                    format!("Possible wildcard injection in call: {qual}"),
                    shell_line,
                );
            }
        }
    }

    pub(in crate::rules) fn django_extra(&mut self, c: &ast::ExprCall) {
        let names = [
            "select",
            "where",
            "params",
            "tables",
            "order_by",
            "select_params",
        ];
        let get = |key: &str| -> Option<&Expr> {
            let from_pos = names
                .iter()
                .position(|n| *n == key)
                .and_then(|i| c.args.get(i));
            from_pos.or_else(|| keyword(c, key).map(|k| &k.value))
        };
        let unsafe_list = |e: Option<&Expr>| match e {
            Some(Expr::List(l)) => l.elts.iter().any(|x| const_str(x).is_none()),
            Some(_) => true,
            None => false,
        };
        let mut insecure = ["where", "tables"].iter().any(|k| unsafe_list(get(k)));
        if !insecure {
            match get("select") {
                Some(Expr::Dict(d)) => {
                    insecure = d
                        .keys
                        .iter()
                        .any(|k| k.as_ref().and_then(const_str).is_none())
                        || d.values.iter().any(|v| const_str(v).is_none());
                }
                Some(_) => insecure = true,
                None => {}
            }
        }
        if insecure {
            self.emit(
                &r::B610,
                c.range,
                "Use of extra potential SQL attack vector.",
            );
        }
    }

    /// Bandit's `check_risk` for B703, simplified: a name is safe when every assignment to it
    /// in the enclosing scope before the call is a string constant (or a safe `.format`).
    pub(in crate::rules) fn mark_safe_is_secure(&self, arg: &Expr, call: &ast::ExprCall) -> bool {
        let Some(scope) = self.scopes.last() else {
            return false;
        };
        match arg {
            Expr::Name(n) => {
                if scope.params.contains(&n.id.as_str()) {
                    return false;
                }
                let mut found = Vec::new();
                assignments_to(scope.body, n.id.as_str(), call.range.start(), &mut found);
                !found.is_empty() && found.iter().all(|v| self.safe_value(v, call, 0))
            }
            Expr::Call(_) => self.safe_value(arg, call, 0),
            Expr::BinOp(b)
                if matches!(b.op, ast::Operator::Mod) && const_str(&b.left).is_some() =>
            {
                match b.right.as_ref() {
                    Expr::Tuple(t) => t.elts.iter().all(|e| self.safe_value(e, call, 0)),
                    other => self.safe_value(other, call, 0),
                }
            }
            _ => false,
        }
    }

    pub(in crate::rules) fn safe_value(
        &self,
        v: &Expr,
        call: &ast::ExprCall,
        depth: usize,
    ) -> bool {
        if depth > 20 {
            return false;
        }
        match v {
            Expr::Constant(c) => matches!(c.value, Constant::Str(_)),
            Expr::Name(_) => self.mark_safe_is_secure(v, call) && depth < 20,
            Expr::Call(f) => match f.func.as_ref() {
                Expr::Attribute(a)
                    if a.attr.as_str() == "format"
                        && matches!(a.value.as_ref(), Expr::Constant(_))
                        && f.keywords.is_empty() =>
                {
                    f.args.iter().all(|x| self.safe_value(x, call, depth + 1))
                }
                _ => false,
            },
            _ => false,
        }
    }
}

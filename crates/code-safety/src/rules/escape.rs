//! AetherFlow's sandbox-escape rules (`AF1xx`, and `AF002` for dynamic imports): the patterns
//! bandit does not look for.

use rustpython_parser::ast::{self, Expr};

use super::imports::{IMPORT_STATE, IMPORTER_MODULES, module_in};
use super::literal::const_str;
use super::{Analyzer, Parent};
use crate::rules::catalog as r;
use crate::source::nfkc;

/// Attributes that lead from ordinary objects to interpreter internals.
const DUNDER_WALK: &[&str] = &[
    "__subclasses__",
    "__globals__",
    "__builtins__",
    "__code__",
    "__mro__",
    "__bases__",
    "__base__",
    "__loader__",
    "__spec__",
    "__closure__",
    "__import__",
    "__getattribute__",
    "__reduce__",
    "__reduce_ex__",
    "gi_frame",
    "gi_code",
    "cr_frame",
    "ag_frame",
    "f_globals",
    "f_locals",
    "f_builtins",
    "f_back",
    "tb_frame",
    "co_code",
];
/// Names that are escape hatches on their own.
const DUNDER_NAMES: &[&str] = &["__builtins__", "__loader__", "__spec__"];
const PROCESS_CALLS: &[&str] = &[
    "os.fork",
    "os.forkpty",
    "os.register_at_fork",
    "os.kill",
    "os.killpg",
    "os.setsid",
    "os.setpgrp",
    "os.setpgid",
    "os.setuid",
    "os.setgid",
    "os.seteuid",
    "os.setegid",
    "os.setreuid",
    "os.setregid",
    "os.nice",
    "os.chroot",
    "os.abort",
    "pty.fork",
];
const EXEC_CALLS: &[&str] = &[
    "exec",
    "eval",
    "compile",
    "builtins.exec",
    "builtins.eval",
    "builtins.compile",
];
const DYNAMIC_IMPORTS: &[&str] = &[
    "__import__",
    "builtins.__import__",
    "importlib.import_module",
    "importlib.__import__",
];
const DECODERS: &[&str] = &[
    "b64decode",
    "b32decode",
    "b32hexdecode",
    "b16decode",
    "b85decode",
    "a85decode",
    "urlsafe_b64decode",
    "standard_b64decode",
    "decodebytes",
    "decodestring",
    "decompress",
    "unhexlify",
    "fromhex",
    "a2b_base64",
    "a2b_hex",
    "a2b_uu",
    "a2b_qp",
    "rot13",
];
const NAMESPACE_CALLS: &[&str] = &[
    "globals",
    "locals",
    "vars",
    "builtins.globals",
    "builtins.locals",
    "builtins.vars",
];
const NAMESPACE_MUTATORS: &[&str] = &[
    "update",
    "setdefault",
    "pop",
    "popitem",
    "clear",
    "__setitem__",
    "__delitem__",
];

fn is_dunder(s: &str) -> bool {
    s.len() > 4 && s.starts_with("__") && s.ends_with("__")
}

impl<'a> Analyzer<'a> {
    /// AF rules that look at calls.
    pub(in crate::rules) fn escape_call(&mut self, c: &'a ast::ExprCall, qual: &str) {
        let range = c.range;
        if DYNAMIC_IMPORTS.contains(&qual) {
            let name = c
                .args
                .first()
                .or_else(|| super::keyword(c, "name").map(|k| &k.value));
            match name.and_then(const_str) {
                Some(m) if m.starts_with('.') => {
                    if !self.policy.imports.allow_relative {
                        self.emit(
                            &r::AF001,
                            range,
                            format!(
                                "`{qual}(\"{m}\")`: relative imports are not allowed by the policy"
                            ),
                        );
                    }
                }
                Some(m) => {
                    let m = nfkc(m).into_owned();
                    self.modules.insert(m.clone());
                    let shown = format!("{qual}(\"{m}\")");
                    self.module_policy(&m, qual.ends_with("__import__"), range, &shown);
                }
                None => self.emit(
                    &r::AF002,
                    range,
                    format!("`{qual}(...)` imports a module whose name is computed at run time"),
                ),
            }
        }
        if let Some(m) = module_in(qual, IMPORTER_MODULES) {
            self.emit(
                &r::AF002,
                range,
                format!("`{qual}(...)`: `{m}` loads modules by path or computed name"),
            );
        }
        if EXEC_CALLS.contains(&qual) {
            let f = qual.rsplit('.').next().unwrap_or(qual);
            self.emit(
                &r::AF104,
                range,
                format!("`{f}()` runs code built at run time"),
            );
            if c.args
                .iter()
                .chain(c.keywords.iter().map(|k| &k.value))
                .any(|a| self.is_decoded(a))
            {
                self.emit(
                    &r::AF110,
                    range,
                    format!("`{f}()` runs data decoded at run time (base64/codecs/zlib/hex)"),
                );
            }
        }
        if DYNAMIC_IMPORTS.contains(&qual) && c.args.iter().any(|a| self.is_decoded(a)) {
            self.emit(
                &r::AF110,
                range,
                format!("`{qual}()` imports a module named by decoded data"),
            );
        }
        if matches!(
            qual,
            "getattr"
                | "setattr"
                | "delattr"
                | "builtins.getattr"
                | "builtins.setattr"
                | "builtins.delattr"
        ) && let Some(n) = c.args.get(1)
        {
            match const_str(n) {
                    Some(s) if is_dunder(s) || DUNDER_WALK.contains(&s) => self.emit(&r::AF102, range, format!(
                        "`{qual}(..., \"{s}\")` reaches a dunder attribute by name")),
                    Some(_) => {}
                    None => self.emit(&r::AF102, range, format!(
                        "`{qual}()` with a computed attribute name can reach any attribute, including interpreter internals")),
                }
        }
        if let Expr::Attribute(a) = c.func.as_ref()
            && NAMESPACE_MUTATORS.contains(&a.attr.as_str())
            && self.is_namespace(&a.value)
        {
            self.emit(
                &r::AF103,
                range,
                format!(
                    "`.{}()` on globals()/locals()/vars() rewrites a namespace",
                    a.attr
                ),
            );
        }
        if qual == "type" && (c.args.len() == 3 || !c.keywords.is_empty()) {
            self.emit(
                &r::AF105,
                range,
                "`type(name, bases, dict)` builds a class at run time",
            );
        }
        if let Expr::Call(inner) = c.func.as_ref()
            && self.qual(&inner.func) == "type"
            && matches!(inner.args.as_slice(), [Expr::Lambda(_)])
        {
            self.emit(
                &r::AF105,
                range,
                "`type(lambda: ...)(...)` builds a function object from a code object",
            );
        }
        if matches!(
            qual,
            "types.FunctionType"
                | "types.CodeType"
                | "types.LambdaType"
                | "types.new_class"
                | "types.ModuleType"
        ) {
            self.emit(
                &r::AF105,
                range,
                format!("`{qual}(...)` builds a code or function object at run time"),
            );
        }
        if matches!(
            qual,
            "breakpoint"
                | "builtins.breakpoint"
                | "pdb.set_trace"
                | "pdb.run"
                | "pdb.runcall"
                | "pdb.post_mortem"
                | "ipdb.set_trace"
        ) {
            self.emit(&r::AF106, range, format!("`{qual}()` stops in a debugger"));
        }
        if matches!(qual, "input" | "raw_input" | "builtins.input") {
            self.emit(
                &r::AF107,
                range,
                "`input()` waits for a terminal the sandbox does not have",
            );
        }
        if PROCESS_CALLS.contains(&qual) {
            self.emit(
                &r::AF109,
                range,
                format!("`{qual}()` forks, signals or changes the identity of the process"),
            );
        }
        if qual.starts_with("ctypes.") || qual.starts_with("cffi.") {
            self.emit(
                &r::AF108,
                range,
                format!("`{qual}()` runs native code outside Python's safety checks"),
            );
        }
        self.format_dunder(c);
    }

    pub(in crate::rules) fn is_decoded(&self, e: &Expr) -> bool {
        match e {
            Expr::Name(n) => self.decoded_names.contains(n.id.as_str()),
            Expr::Call(c) => {
                let q = self.qual(&c.func);
                let last = q.rsplit('.').next().unwrap_or("");
                let by_attr = matches!(c.func.as_ref(), Expr::Attribute(a) if DECODERS.contains(&a.attr.as_str()));
                DECODERS.contains(&last)
                    || by_attr
                    || q == "codecs.decode"
                    || q == "bytes.fromhex"
                    || c.args.iter().any(|a| self.is_decoded(a))
                    || matches!(c.func.as_ref(), Expr::Attribute(a) if self.is_decoded(&a.value))
            }
            Expr::BinOp(b) => self.is_decoded(&b.left) || self.is_decoded(&b.right),
            Expr::Attribute(a) => self.is_decoded(&a.value),
            _ => false,
        }
    }

    pub(in crate::rules) fn is_namespace(&self, e: &Expr) -> bool {
        match e {
            Expr::Call(c) => NAMESPACE_CALLS.contains(&self.qual(&c.func).as_str()),
            Expr::Name(n) => self.namespace_names.contains(n.id.as_str()),
            _ => false,
        }
    }

    /// AF103 for `globals()[k] = v`, `del g[k]`, `locals()[k] += 1`.
    pub(in crate::rules) fn namespace_write_target(&mut self, t: &Expr) {
        match t {
            Expr::Subscript(s) if self.is_namespace(&s.value) => {
                self.emit(&r::AF103, s.range, "writing into globals()/locals()/vars() creates or replaces variables behind the reader's back");
            }
            Expr::Tuple(t) => t.elts.iter().for_each(|e| self.namespace_write_target(e)),
            Expr::List(l) => l.elts.iter().for_each(|e| self.namespace_write_target(e)),
            _ => {}
        }
    }

    /// Remembers names bound to namespaces or decoded data, for later AF103/AF110 checks.
    pub(in crate::rules) fn track_assign(&mut self, a: &ast::StmtAssign) {
        let namespace = self.is_namespace(&a.value);
        let decoded = self.is_decoded(&a.value);
        for t in &a.targets {
            if let Expr::Name(n) = t {
                let id = nfkc(n.id.as_str()).into_owned();
                if namespace {
                    self.namespace_names.insert(id.clone());
                } else {
                    self.namespace_names.remove(&id);
                }
                if decoded {
                    self.decoded_names.insert(id);
                }
            }
        }
    }

    pub(in crate::rules) fn attribute(&mut self, a: &ast::ExprAttribute) {
        let attr = nfkc(a.attr.as_str());
        if DUNDER_WALK.contains(&attr.as_ref()) {
            self.emit(
                &r::AF101,
                a.range,
                format!(
                    "attribute `{attr}` reaches interpreter internals (a sandbox-escape pattern)"
                ),
            );
        }
        if IMPORT_STATE.contains(&attr.as_ref()) || attr == "util" || attr == "machinery" {
            let q = {
                let s = format!("{}.{}", self.qual(&a.value), attr);
                self.aliases.get(&s).cloned().unwrap_or(s)
            };
            if q.strip_prefix("sys.")
                .is_some_and(|rest| IMPORT_STATE.contains(&rest))
            {
                self.emit(
                    &r::AF002,
                    a.range,
                    format!("`{q}` controls which code every later import runs"),
                );
            } else if let Some(m) = module_in(&q, IMPORTER_MODULES) {
                self.emit(
                    &r::AF002,
                    a.range,
                    format!("`{q}`: `{m}` loads modules by path or computed name"),
                );
            }
        }
    }

    pub(in crate::rules) fn subscript(&mut self, s: &ast::ExprSubscript) {
        if let Some(k) = const_str(&s.slice)
            && (DUNDER_WALK.contains(&k) || k == "__builtins__")
        {
            self.emit(
                &r::AF101,
                s.range,
                format!("subscript `[\"{k}\"]` reaches interpreter internals"),
            );
        }
    }

    pub(in crate::rules) fn name(&mut self, n: &ast::ExprName, parent: Parent<'a>) {
        let id = nfkc(n.id.as_str());
        if DUNDER_NAMES.contains(&id.as_ref()) {
            self.emit(
                &r::AF101,
                n.range,
                format!("`{id}` exposes the interpreter's module machinery"),
            );
        }
        if !matches!(parent, Parent::CallFunc) {
            let q = self
                .aliases
                .get(id.as_ref())
                .map_or(id.as_ref(), String::as_str);
            if matches!(q, "exec" | "eval" | "compile" | "__import__") {
                self.emit(&r::AF104, n.range, format!("`{q}` is referenced without being called, so it can be called under another name"));
            }
        }
    }

    /// AF111 for `"{0.__class__}".format(x)` and friends.
    pub(in crate::rules) fn format_dunder(&mut self, c: &ast::ExprCall) {
        let template = match c.func.as_ref() {
            Expr::Attribute(a) if matches!(a.attr.as_str(), "format" | "format_map") => {
                const_str(&a.value).or_else(|| {
                    (self.qual(&a.value) == "str" || a.attr.as_str() == "format")
                        .then(|| c.args.first().and_then(const_str))
                        .flatten()
                })
            }
            _ => None,
        };
        if let Some(t) = template
            && let Some(field) = dunder_field(t)
        {
            self.emit(
                &r::AF111,
                c.range,
                format!("format field `{{{field}}}` reaches a dunder attribute"),
            );
        }
    }

    /// AF111 for f-strings whose fields touch dunder attributes.
    pub(in crate::rules) fn fstring_dunder(&mut self, j: &ast::ExprJoinedStr) {
        for v in &j.values {
            if let Expr::FormattedValue(f) = v
                && let Some(d) = first_dunder_attr(&f.value)
            {
                self.emit(
                    &r::AF111,
                    f.range,
                    format!("f-string field reaches dunder attribute `{d}`"),
                );
            }
        }
    }
}

/// Dunders that only name things (`{obj.__class__.__name__}`) are fine in format fields; any
/// other dunder or frame attribute reaches into the interpreter.
const NAMING_DUNDERS: &[&str] = &[
    "__name__",
    "__qualname__",
    "__module__",
    "__doc__",
    "__class__",
];

fn revealing(attr: &str) -> bool {
    (is_dunder(attr) && !NAMING_DUNDERS.contains(&attr)) || DUNDER_WALK.contains(&attr)
}

fn first_dunder_attr(e: &Expr) -> Option<String> {
    match e {
        Expr::Attribute(a) => {
            let attr = nfkc(a.attr.as_str());
            if revealing(&attr) {
                Some(attr.into_owned())
            } else {
                first_dunder_attr(&a.value)
            }
        }
        Expr::Subscript(s) => first_dunder_attr(&s.value),
        Expr::Call(c) => first_dunder_attr(&c.func),
        _ => None,
    }
}

/// The first replacement field of a format string whose name walks into a dunder or frame
/// attribute (`{0.__class__}`, `{x[__globals__]}`).
fn dunder_field(template: &str) -> Option<&str> {
    let b = template.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' if b.get(i + 1) == Some(&b'{') => i += 2,
            b'{' => {
                let end = template[i + 1..]
                    .find('}')
                    .map_or(template.len(), |e| i + 1 + e);
                let field = &template[i + 1..end];
                let name = field.split(['!', ':']).next().unwrap_or("");
                let walks = name.split(['.', '[', ']']).skip(1).any(revealing);
                if walks {
                    return Some(name);
                }
                i = end + 1;
            }
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_fields_with_dunders_are_found() {
        assert_eq!(
            dunder_field("{0.__class__.__mro__}"),
            Some("0.__class__.__mro__")
        );
        assert_eq!(dunder_field("{x[__globals__]}"), Some("x[__globals__]"));
        assert_eq!(dunder_field("{{0.__class__}} {name!r:>10}"), None);
        assert_eq!(dunder_field("{__name__}"), None);
    }
}

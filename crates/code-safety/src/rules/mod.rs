//! The rules and the walk over the AST that runs them. Bandit's node visitor is mirrored where
//! it matters for matching bandit's results: imports and aliases are recorded in visiting order,
//! a call is checked before its children, and string constants are judged by their parent.

mod bandit;
pub(crate) mod blacklist;
pub mod catalog;
mod escape;
mod imports;
mod literal;

use std::collections::{BTreeSet, HashMap, HashSet};

use rustpython_parser::ast::{self, Expr, Ranged, Stmt};
use rustpython_parser::text_size::TextRange;

use crate::finding::{Confidence, Rule, Severity};
use crate::policy::Policy;
use crate::source::nfkc;

/// Deepest AST nesting walked on a big stack; the parser's limits keep real input below it.
pub(crate) const MAX_WALK_DEPTH: usize = 5000;
/// Deepest nesting walked on the caller's stack (any thread, even a 2 MiB test thread); deeper
/// trees are walked again on a thread with a big stack.
pub(crate) const INLINE_WALK_DEPTH: usize = 250;

/// A finding before positions and suppressions are resolved.
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pub(crate) rule: &'static Rule,
    pub(crate) severity: Severity,
    pub(crate) confidence: Confidence,
    pub(crate) message: String,
    pub(crate) range: TextRange,
    /// Offset whose line bandit reports instead of the node's first line.
    pub(crate) line_at: Option<usize>,
    /// Column bandit reports instead of the node's byte column (B613 counts characters from 1).
    pub(crate) col_offset: Option<usize>,
}

/// What a node hangs under, for rules that judge a node by its parent (bandit's `_bandit_parent`).
#[derive(Clone, Copy)]
enum Parent<'a> {
    Other,
    ExprStmt,
    Assign(&'a ast::StmtAssign),
    Dict(&'a ast::ExprDict),
    Subscript(Option<&'a ast::StmtAssign>),
    Compare(&'a ast::ExprCompare),
    BinOp,
    CallFunc,
    CallArg(&'a ast::ExprCall),
}

struct Scope<'a> {
    body: &'a [Stmt],
    params: Vec<&'a str>,
}

/// Walks one module and collects raw findings.
pub(crate) struct Analyzer<'a> {
    pub(crate) policy: &'a Policy,
    source: &'a str,
    aliases: HashMap<String, String>,
    imports: HashSet<String>,
    /// Absolute module names imported anywhere (for dependency checks).
    pub(crate) modules: BTreeSet<String>,
    /// Names bound to `globals()`, `locals()` or `vars(...)`.
    namespace_names: HashSet<String>,
    /// Names bound to the result of a decoding call (base64, codecs, zlib...).
    decoded_names: HashSet<String>,
    scopes: Vec<Scope<'a>>,
    pub(crate) raws: Vec<Raw>,
    depth: usize,
    max_depth: usize,
    /// Offset where the walk stopped because the tree was too deep.
    pub(crate) too_deep: Option<usize>,
}

impl<'a> Analyzer<'a> {
    pub(crate) fn new(policy: &'a Policy, source: &'a str, max_depth: usize) -> Self {
        Analyzer {
            policy,
            source,
            aliases: HashMap::new(),
            imports: HashSet::new(),
            modules: BTreeSet::new(),
            namespace_names: HashSet::new(),
            decoded_names: HashSet::new(),
            scopes: Vec::new(),
            raws: Vec::new(),
            depth: 0,
            max_depth,
            too_deep: None,
        }
    }

    /// Runs every rule over `suite`.
    pub(crate) fn run(&mut self, suite: &'a [Stmt]) {
        self.scopes.push(Scope {
            body: suite,
            params: Vec::new(),
        });
        for s in suite {
            self.stmt(s);
        }
        self.scopes.pop();
        self.trojansource();
    }

    fn emit(&mut self, rule: &'static Rule, range: TextRange, message: impl Into<String>) {
        self.emit_rated(rule, rule.severity, rule.confidence, range, message, None);
    }

    fn emit_rated(
        &mut self,
        rule: &'static Rule,
        severity: Severity,
        confidence: Confidence,
        range: TextRange,
        message: impl Into<String>,
        line_at: Option<usize>,
    ) {
        self.raws.push(Raw {
            rule,
            severity,
            confidence,
            message: message.into(),
            range,
            line_at,
            col_offset: None,
        });
    }

    fn enter(&mut self, range: TextRange) -> bool {
        self.depth += 1;
        if self.depth > self.max_depth {
            if self.too_deep.is_none() {
                self.too_deep = Some(u32::from(range.start()) as usize);
            }
            return false;
        }
        true
    }

    /// Bandit's `get_call_name` / `_get_attr_qual_name`, with import aliases resolved.
    fn qual(&self, e: &Expr) -> String {
        match e {
            Expr::Name(n) => {
                let id = nfkc(n.id.as_str());
                self.aliases
                    .get(id.as_ref())
                    .cloned()
                    .unwrap_or_else(|| id.into_owned())
            }
            Expr::Attribute(a) => {
                let s = format!("{}.{}", self.qual(&a.value), nfkc(a.attr.as_str()));
                self.aliases.get(&s).cloned().unwrap_or(s)
            }
            _ => String::new(),
        }
    }

    fn imported_like(&self, needle: &str) -> bool {
        self.imports.iter().any(|i| i.contains(needle))
    }

    fn stmts(&mut self, body: &'a [Stmt]) {
        for s in body {
            self.stmt(s);
        }
    }

    fn stmt(&mut self, s: &'a Stmt) {
        if self.enter(s.range()) {
            self.stmt_inner(s);
        }
        self.depth -= 1;
    }

    fn stmt_inner(&mut self, s: &'a Stmt) {
        match s {
            Stmt::FunctionDef(f) => {
                self.function_defaults(&f.args, f.range);
                self.function(&f.args, &f.body, &f.decorator_list, f.returns.as_deref());
            }
            Stmt::AsyncFunctionDef(f) => {
                self.function(&f.args, &f.body, &f.decorator_list, f.returns.as_deref());
            }
            Stmt::ClassDef(c) => {
                self.exprs(&c.bases);
                for k in &c.keywords {
                    self.expr(&k.value, Parent::Other);
                }
                self.stmts(&c.body);
                self.exprs(&c.decorator_list);
            }
            Stmt::Return(r) => self.opt_expr(r.value.as_deref()),
            Stmt::Delete(d) => {
                for t in &d.targets {
                    self.namespace_write_target(t);
                }
                self.exprs(&d.targets);
            }
            Stmt::Assign(a) => {
                self.track_assign(a);
                for t in &a.targets {
                    self.namespace_write_target(t);
                    self.expr(t, Parent::Assign(a));
                }
                self.expr(&a.value, Parent::Assign(a));
            }
            Stmt::TypeAlias(t) => {
                self.expr(&t.name, Parent::Other);
                self.expr(&t.value, Parent::Other);
            }
            Stmt::AugAssign(a) => {
                self.namespace_write_target(&a.target);
                self.expr(&a.target, Parent::Other);
                self.expr(&a.value, Parent::Other);
            }
            Stmt::AnnAssign(a) => {
                self.namespace_write_target(&a.target);
                self.expr(&a.target, Parent::Other);
                self.expr(&a.annotation, Parent::Other);
                self.opt_expr(a.value.as_deref());
            }
            Stmt::For(f) => {
                self.expr(&f.target, Parent::Other);
                self.expr(&f.iter, Parent::Other);
                self.stmts(&f.body);
                self.stmts(&f.orelse);
            }
            Stmt::AsyncFor(f) => {
                self.expr(&f.target, Parent::Other);
                self.expr(&f.iter, Parent::Other);
                self.stmts(&f.body);
                self.stmts(&f.orelse);
            }
            Stmt::While(w) => {
                self.expr(&w.test, Parent::Other);
                self.stmts(&w.body);
                self.stmts(&w.orelse);
            }
            Stmt::If(i) => {
                self.expr(&i.test, Parent::Other);
                self.stmts(&i.body);
                self.stmts(&i.orelse);
            }
            Stmt::With(w) => {
                for item in &w.items {
                    self.expr(&item.context_expr, Parent::Other);
                    self.opt_expr(item.optional_vars.as_deref());
                }
                self.stmts(&w.body);
            }
            Stmt::AsyncWith(w) => {
                for item in &w.items {
                    self.expr(&item.context_expr, Parent::Other);
                    self.opt_expr(item.optional_vars.as_deref());
                }
                self.stmts(&w.body);
            }
            Stmt::Match(m) => {
                self.expr(&m.subject, Parent::Other);
                for case in &m.cases {
                    self.pattern(&case.pattern);
                    self.opt_expr(case.guard.as_deref());
                    self.stmts(&case.body);
                }
            }
            Stmt::Raise(r) => {
                self.opt_expr(r.exc.as_deref());
                self.opt_expr(r.cause.as_deref());
            }
            Stmt::Try(t) => {
                self.stmts(&t.body);
                self.handlers(&t.handlers);
                self.stmts(&t.orelse);
                self.stmts(&t.finalbody);
            }
            Stmt::TryStar(t) => {
                self.stmts(&t.body);
                self.handlers(&t.handlers);
                self.stmts(&t.orelse);
                self.stmts(&t.finalbody);
            }
            Stmt::Assert(a) => {
                self.assert_used(a);
                self.expr(&a.test, Parent::Other);
                self.opt_expr(a.msg.as_deref());
            }
            Stmt::Import(i) => self.import(i),
            Stmt::ImportFrom(i) => self.import_from(i),
            Stmt::Expr(e) => self.expr(&e.value, Parent::ExprStmt),
            Stmt::Global(_)
            | Stmt::Nonlocal(_)
            | Stmt::Pass(_)
            | Stmt::Break(_)
            | Stmt::Continue(_) => {}
        }
    }

    fn function(
        &mut self,
        args: &'a ast::Arguments,
        body: &'a [Stmt],
        decorators: &'a [Expr],
        returns: Option<&'a Expr>,
    ) {
        self.arguments(args);
        let params = args
            .posonlyargs
            .iter()
            .chain(&args.args)
            .chain(&args.kwonlyargs)
            .map(|a| a.def.arg.as_str())
            .collect();
        self.scopes.push(Scope { body, params });
        self.stmts(body);
        self.scopes.pop();
        self.exprs(decorators);
        self.opt_expr(returns);
    }

    fn arguments(&mut self, args: &'a ast::Arguments) {
        for a in args
            .posonlyargs
            .iter()
            .chain(&args.args)
            .chain(&args.kwonlyargs)
        {
            self.opt_expr(a.def.annotation.as_deref());
            self.opt_expr(a.default.as_deref());
        }
        for a in args.vararg.iter().chain(&args.kwarg) {
            self.opt_expr(a.annotation.as_deref());
        }
    }

    fn handlers(&mut self, handlers: &'a [ast::ExceptHandler]) {
        for h in handlers {
            let ast::ExceptHandler::ExceptHandler(h) = h;
            self.try_except(h);
            self.opt_expr(h.type_.as_deref());
            self.stmts(&h.body);
        }
    }

    fn pattern(&mut self, p: &'a ast::Pattern) {
        if !self.enter(p.range()) {
            self.depth -= 1;
            return;
        }
        match p {
            ast::Pattern::MatchValue(v) => self.expr(&v.value, Parent::Other),
            ast::Pattern::MatchSingleton(_) | ast::Pattern::MatchStar(_) => {}
            ast::Pattern::MatchSequence(s) => s.patterns.iter().for_each(|p| self.pattern(p)),
            ast::Pattern::MatchMapping(m) => {
                self.exprs(&m.keys);
                m.patterns.iter().for_each(|p| self.pattern(p));
            }
            ast::Pattern::MatchClass(c) => {
                self.expr(&c.cls, Parent::Other);
                c.patterns.iter().for_each(|p| self.pattern(p));
                c.kwd_patterns.iter().for_each(|p| self.pattern(p));
            }
            ast::Pattern::MatchAs(a) => {
                if let Some(p) = &a.pattern {
                    self.pattern(p);
                }
            }
            ast::Pattern::MatchOr(o) => o.patterns.iter().for_each(|p| self.pattern(p)),
        }
        self.depth -= 1;
    }

    fn exprs(&mut self, es: &'a [Expr]) {
        for e in es {
            self.expr(e, Parent::Other);
        }
    }

    fn opt_expr(&mut self, e: Option<&'a Expr>) {
        if let Some(e) = e {
            self.expr(e, Parent::Other);
        }
    }

    fn comprehensions(&mut self, gens: &'a [ast::Comprehension]) {
        for g in gens {
            self.expr(&g.target, Parent::Other);
            self.expr(&g.iter, Parent::Other);
            self.exprs(&g.ifs);
        }
    }

    fn expr(&mut self, e: &'a Expr, parent: Parent<'a>) {
        if self.enter(e.range()) {
            self.expr_inner(e, parent);
        }
        self.depth -= 1;
    }

    fn expr_inner(&mut self, e: &'a Expr, parent: Parent<'a>) {
        match e {
            Expr::BoolOp(b) => self.exprs(&b.values),
            Expr::NamedExpr(n) => {
                self.expr(&n.target, Parent::Other);
                self.expr(&n.value, Parent::Other);
            }
            Expr::BinOp(b) => {
                if !matches!(parent, Parent::BinOp) {
                    self.sql_binop(b, parent);
                }
                self.expr(&b.left, Parent::BinOp);
                self.expr(&b.right, Parent::BinOp);
            }
            Expr::UnaryOp(u) => self.expr(&u.operand, Parent::Other),
            Expr::Lambda(l) => {
                self.arguments(&l.args);
                self.expr(&l.body, Parent::Other);
            }
            Expr::IfExp(i) => {
                self.expr(&i.test, Parent::Other);
                self.expr(&i.body, Parent::Other);
                self.expr(&i.orelse, Parent::Other);
            }
            Expr::Dict(d) => {
                for k in d.keys.iter().flatten() {
                    self.expr(k, Parent::Dict(d));
                }
                for v in &d.values {
                    self.expr(v, Parent::Dict(d));
                }
            }
            Expr::Set(s) => self.exprs(&s.elts),
            Expr::List(l) => self.exprs(&l.elts),
            Expr::Tuple(t) => self.exprs(&t.elts),
            Expr::ListComp(c) => {
                self.expr(&c.elt, Parent::Other);
                self.comprehensions(&c.generators);
            }
            Expr::SetComp(c) => {
                self.expr(&c.elt, Parent::Other);
                self.comprehensions(&c.generators);
            }
            Expr::GeneratorExp(c) => {
                self.expr(&c.elt, Parent::Other);
                self.comprehensions(&c.generators);
            }
            Expr::DictComp(c) => {
                self.expr(&c.key, Parent::Other);
                self.expr(&c.value, Parent::Other);
                self.comprehensions(&c.generators);
            }
            Expr::Await(a) => self.expr(&a.value, Parent::Other),
            Expr::Yield(y) => self.opt_expr(y.value.as_deref()),
            Expr::YieldFrom(y) => self.expr(&y.value, Parent::Other),
            Expr::Compare(c) => {
                self.expr(&c.left, Parent::Compare(c));
                for v in &c.comparators {
                    self.expr(v, Parent::Compare(c));
                }
            }
            Expr::Call(c) => {
                self.call(c, parent);
                self.expr(&c.func, Parent::CallFunc);
                for a in &c.args {
                    self.expr(a, Parent::CallArg(c));
                }
                for k in &c.keywords {
                    self.expr(&k.value, Parent::Other);
                }
            }
            Expr::FormattedValue(f) => {
                self.expr(&f.value, Parent::Other);
                self.opt_expr(f.format_spec.as_deref());
            }
            Expr::JoinedStr(j) => {
                self.joined_str(j, parent);
                self.exprs(&j.values);
            }
            Expr::Constant(c) => {
                if let ast::Constant::Str(s) = &c.value
                    && !matches!(parent, Parent::ExprStmt)
                {
                    self.string(c, s, parent);
                }
            }
            Expr::Attribute(a) => {
                self.attribute(a);
                self.expr(&a.value, Parent::Other);
            }
            Expr::Subscript(s) => {
                self.subscript(s);
                let grand = match parent {
                    Parent::Assign(a) => Some(a),
                    _ => None,
                };
                self.expr(&s.value, Parent::Subscript(grand));
                self.expr(&s.slice, Parent::Subscript(grand));
            }
            Expr::Starred(s) => self.expr(&s.value, Parent::Other),
            Expr::Name(n) => self.name(n, parent),
            Expr::Slice(s) => {
                self.opt_expr(s.lower.as_deref());
                self.opt_expr(s.upper.as_deref());
                self.opt_expr(s.step.as_deref());
            }
        }
    }

    /// Checks run on every call: bandit's call tests, then AetherFlow's.
    fn call(&mut self, c: &'a ast::ExprCall, parent: Parent<'a>) {
        let qual = self.qual(&c.func);
        self.bandit_call(c, &qual, parent);
        self.escape_call(c, &qual);
    }
}

/// The keyword argument called `name`.
fn keyword<'e>(c: &'e ast::ExprCall, name: &str) -> Option<&'e ast::Keyword> {
    c.keywords
        .iter()
        .find(|k| k.arg.as_ref().is_some_and(|a| a.as_str() == name))
}

fn start(r: TextRange) -> usize {
    u32::from(r.start()) as usize
}

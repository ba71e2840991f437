//! Bandit's plugins (`B1xx`, `B2xx`, `B324`, `B5xx`, `B6xx`, `B7xx`) and its call black-list,
//! re-implemented to flag what bandit flags, with the same ratings and messages. The call
//! tests are dispatched from [`Analyzer::bandit_call`]; string, crypto and injection tests live
//! in the submodules.

mod crypto;
mod injection;
mod strings;

use crypto::WEAK_CRYPT;
use strings::password_like;

use rustpython_parser::ast::{self, Constant, Expr, Ranged};
use rustpython_parser::text_size::TextRange;

use crate::finding::{Confidence as C, Severity as S};
use crate::rules::catalog as r;
use crate::rules::literal::{Lit, arg_value, const_str};
use crate::rules::{Analyzer, Parent, blacklist, keyword, start};

const BAD_SSL: &[&str] = &[
    "PROTOCOL_SSLv2",
    "SSLv2_METHOD",
    "SSLv23_METHOD",
    "PROTOCOL_SSLv3",
    "PROTOCOL_TLSv1",
    "SSLv3_METHOD",
    "TLSv1_METHOD",
    "PROTOCOL_TLSv1_1",
    "TLSv1_1_METHOD",
];

const HTTP_VERBS: &[&str] = &["get", "options", "head", "post", "put", "patch", "delete"];
const HTTPX_EXTRA: &[&str] = &["request", "stream", "Client", "AsyncClient"];

fn called_name(c: &ast::ExprCall) -> Option<&str> {
    match c.func.as_ref() {
        Expr::Attribute(a) => Some(a.attr.as_str()),
        Expr::Name(n) => Some(n.id.as_str()),
        _ => None,
    }
}

fn is_execute_call(parent: Parent<'_>) -> bool {
    match parent {
        Parent::CallArg(c) => matches!(called_name(c), Some("execute" | "executemany")),
        _ => false,
    }
}

/// `check_call_arg_value`: `None` when the keyword is absent, else whether it equals a value.
fn kw_is(c: &ast::ExprCall, name: &str, values: &[&str]) -> Option<bool> {
    let k = keyword(c, name)?;
    let v = arg_value(&k.value);
    Some(values.iter().any(|x| v.is(x)))
}

fn kw_value(c: &ast::ExprCall, name: &str) -> Option<Lit> {
    keyword(c, name).map(|k| arg_value(&k.value))
}

fn kw_line(c: &ast::ExprCall, name: &str) -> Option<usize> {
    keyword(c, name).map(|k| start(k.value.range()))
}

fn pos(c: &ast::ExprCall, i: usize) -> Lit {
    c.args.get(i).map_or(Lit::Unknown, arg_value)
}

fn py_oct(v: i128) -> String {
    if v < 0 {
        format!("-0o{:o}", -v)
    } else {
        format!("0o{v:o}")
    }
}

impl<'a> Analyzer<'a> {
    pub(in crate::rules) fn assert_used(&mut self, a: &ast::StmtAssert) {
        self.emit(
            &r::B101,
            a.range,
            "Use of assert detected. The enclosed code will be removed when compiling to optimised byte code.",
        );
    }

    pub(in crate::rules) fn try_except(&mut self, h: &ast::ExceptHandlerExceptHandler) {
        if h.body.len() != 1 {
            return;
        }
        if let Some(t) = &h.type_
            && !matches!(t.as_ref(), Expr::Name(n) if n.id.as_str() == "Exception")
        {
            return;
        }
        match &h.body[0] {
            ast::Stmt::Pass(_) => self.emit(&r::B110, h.range, "Try, Except, Pass detected."),
            ast::Stmt::Continue(_) => {
                self.emit(&r::B112, h.range, "Try, Except, Continue detected.")
            }
            _ => {}
        }
    }

    /// B107 and B503, which bandit runs on `def` (not `async def`).
    pub(in crate::rules) fn function_defaults(&mut self, args: &ast::Arguments, range: TextRange) {
        for a in &args.args {
            let Some(d) = &a.default else { continue };
            if let Some(s) = const_str(d)
                && password_like(a.def.arg.as_str())
            {
                self.emit(
                    &r::B107,
                    range,
                    format!("Possible hardcoded password: '{s}'"),
                );
                break;
            }
        }
        let bad = args
            .posonlyargs
            .iter()
            .chain(&args.args)
            .filter_map(|a| a.default.as_deref())
            .any(|d| matches!(d, Expr::Attribute(a) if BAD_SSL.contains(&a.attr.as_str())));
        if bad {
            self.emit(
                &r::B503,
                range,
                "Function definition identified with insecure SSL/TLS protocol version by default, possible security issue.",
            );
        }
    }

    /// Bandit's `Call` tests.
    pub(in crate::rules) fn bandit_call(
        &mut self,
        c: &'a ast::ExprCall,
        qual: &str,
        parent: Parent<'a>,
    ) {
        let name = qual.rsplit('.').next().unwrap_or("");
        let range = c.range;
        let first = qual.split('.').next().unwrap_or("");

        // Black-list (B3xx, then B4xx names via __import__/import_module).
        let bl_name: Option<String> = match c.func.as_ref() {
            Expr::Name(n) if n.id.as_str() == "__import__" => Some(match c.args.first() {
                Some(a) => const_str(a).unwrap_or("UNKNOWN").to_owned(),
                None => String::new(),
            }),
            _ if qual == "importlib.import_module" || qual == "importlib.__import__" => {
                match c.args.first() {
                    Some(a) => arg_value(a).as_str().map(str::to_owned),
                    None => kw_value(c, "name").and_then(|v| v.as_str().map(str::to_owned)),
                }
            }
            _ => Some(qual.to_owned()),
        };
        if let Some(bl) = bl_name
            && let Some((entry, msg)) = blacklist::match_call(&bl)
        {
            self.emit(entry.rule, range, msg);
        }

        if qual == "exec" {
            self.emit(&r::B102, range, "Use of exec detected.");
        }

        // B103
        if name.contains("chmod")
            && c.args.len() == 2
            && let Lit::Int(mode) = pos(c, 1)
            && mode & 0o033 != 0
        {
            let sev = if mode & 0o002 != 0 {
                S::High
            } else {
                S::Medium
            };
            let file = match pos(c, 0) {
                Lit::Unknown => "NOT PARSED".to_owned(),
                v => v.display(),
            };
            self.emit_rated(
                &r::B103,
                sev,
                C::High,
                range,
                format!(
                    "Chmod setting a permissive mask {} on file ({file}).",
                    py_oct(mode)
                ),
                None,
            );
        }

        // B106
        for k in &c.keywords {
            if let (Some(arg), Some(v)) = (&k.arg, const_str(&k.value))
                && password_like(arg.as_str())
            {
                self.emit_rated(
                    &r::B106,
                    S::Low,
                    C::Medium,
                    range,
                    format!("Possible hardcoded password: '{v}'"),
                    Some(start(k.value.range())),
                );
                break;
            }
        }

        // B113
        let requests_verb = first == "requests" && HTTP_VERBS.contains(&name);
        let httpx = first == "httpx" && (HTTP_VERBS.contains(&name) || HTTPX_EXTRA.contains(&name));
        if requests_verb && keyword(c, "timeout").is_none() {
            self.emit(&r::B113, range, format!("Call to {first} without timeout"));
        } else if (requests_verb || httpx) && kw_is(c, "timeout", &["None"]) == Some(true) {
            self.emit(
                &r::B113,
                range,
                format!("Call to {first} with timeout set to None"),
            );
        }

        // B201
        if qual.ends_with(".run")
            && kw_is(c, "debug", &["True"]) == Some(true)
            && self.imported_like("flask")
        {
            self.emit_rated(
                &r::B201,
                S::High,
                C::Medium,
                range,
                "A Flask app appears to be run with debug=True, which exposes the Werkzeug debugger and allows the execution of arbitrary code.",
                kw_line(c, "debug"),
            );
        }

        // B202
        if self.imports.contains("tarfile") && name.contains("extractall") {
            self.tarfile(c);
        }

        // B324
        let has_part = |p: &str| qual.split('.').any(|x| x == p);
        if has_part("hashlib") {
            self.hashlib(c, name);
        } else if has_part("crypt") && (name == "crypt" || name == "mksalt") {
            let salt = if name == "crypt" {
                if c.args.len() > 1 {
                    pos(c, 1)
                } else {
                    kw_value(c, "salt").unwrap_or(Lit::Unknown)
                }
            } else if !c.args.is_empty() {
                pos(c, 0)
            } else {
                kw_value(c, "method").unwrap_or(Lit::Unknown)
            };
            if let Some(s) = salt.as_str().filter(|s| WEAK_CRYPT.contains(s)) {
                self.emit_rated(
                    &r::B324,
                    S::Medium,
                    C::High,
                    range,
                    format!("Use of insecure crypt.{} hash function.", s.to_uppercase()),
                    None,
                );
            }
        }

        // B501
        if (requests_verb || httpx) && kw_is(c, "verify", &["False"]) == Some(true) {
            self.emit_rated(
                &r::B501,
                S::High,
                C::High,
                range,
                format!("Call to {first} with verify=False disabling SSL certificate checks, security issue."),
                kw_line(c, "verify"),
            );
        }

        // B502 / B504
        if qual == "ssl.wrap_socket" {
            if kw_is(c, "ssl_version", BAD_SSL) == Some(true) {
                self.emit_rated(&r::B502, S::High, C::High, range,
                    "ssl.wrap_socket call with insecure SSL/TLS protocol version identified, security issue.",
                    kw_line(c, "ssl_version"));
            }
            if keyword(c, "ssl_version").is_none() {
                self.emit(&r::B504, range,
                    "ssl.wrap_socket call with no SSL/TLS protocol version specified, the default SSLv23 could be insecure, possible security issue.");
            }
        } else if qual == "pyOpenSSL.SSL.Context" {
            if kw_is(c, "method", BAD_SSL) == Some(true) {
                self.emit_rated(&r::B502, S::High, C::High, range,
                    "SSL.Context call with insecure SSL/TLS protocol version identified, security issue.",
                    kw_line(c, "method"));
            }
        } else if kw_is(c, "method", BAD_SSL) == Some(true)
            || kw_is(c, "ssl_version", BAD_SSL) == Some(true)
        {
            self.emit_rated(
                &r::B502,
                S::Medium,
                C::Medium,
                range,
                "Function call with insecure SSL/TLS protocol identified, possible security issue.",
                kw_line(c, "method").or_else(|| kw_line(c, "ssl_version")),
            );
        }

        self.weak_key(c, qual);

        // B506
        if self.imports.contains("yaml")
            && has_part("yaml")
            && name == "load"
            && kw_is(c, "Loader", &["SafeLoader"]) != Some(true)
            && kw_is(c, "Loader", &["CSafeLoader"]) != Some(true)
            && !pos(c, 1).is("SafeLoader")
            && !pos(c, 1).is("CSafeLoader")
        {
            self.emit(&r::B506, range,
                "Use of unsafe yaml load. Allows instantiation of arbitrary objects. Consider yaml.safe_load().");
        }

        // B507
        if name == "set_missing_host_key_policy" && self.imported_like("paramiko") {
            let policy = c.args.first().and_then(|a| match a {
                Expr::Attribute(a) => Some(a.attr.as_str()),
                Expr::Name(n) => Some(n.id.as_str()),
                Expr::Call(inner) => called_name(inner),
                _ => None,
            });
            if matches!(policy, Some("AutoAddPolicy" | "WarningPolicy")) {
                self.emit(
                    &r::B507,
                    range,
                    "Paramiko call with policy set to automatically trust the unknown host key.",
                );
            }
        }

        // B508 / B509
        if qual == "pysnmp.hlapi.CommunityData"
            && matches!(kw_value(c, "mpModel"), Some(Lit::Int(0 | 1)))
        {
            self.emit(
                &r::B508,
                range,
                "The use of SNMPv1 and SNMPv2 is insecure. You should use SNMPv3 if able.",
            );
        }
        if qual == "pysnmp.hlapi.UsmUserData" && c.args.len() < 3 {
            self.emit(&r::B509, range,
                "You should not use SNMPv3 without encryption. noAuthNoPriv & authNoPriv is insecure");
        }

        // B601
        if name == "exec_command" && self.imported_like("paramiko") {
            self.emit(
                &r::B601,
                range,
                "Possible shell injection via Paramiko call, check inputs are properly sanitized.",
            );
        }

        self.shell(c, qual);

        // B610
        if name == "extra" {
            self.django_extra(c);
        }
        // B611
        if name == "RawSQL" && self.imported_like("django.db.models") {
            let sql = c
                .args
                .first()
                .or_else(|| keyword(c, "sql").map(|k| &k.value));
            if sql.is_some_and(|s| const_str(s).is_none()) {
                self.emit(
                    &r::B611,
                    range,
                    "Use of RawSQL potential SQL attack vector.",
                );
            }
        }
        // B612
        if qual == "logging.config.listen" && keyword(c, "verify").is_none() {
            self.emit(
                &r::B612,
                range,
                "Use of insecure logging.config.listen detected.",
            );
        }
        // B614
        if self.imports.contains("torch")
            && (qual == "torch.load" || qual == "torch.serialization.load")
            && kw_value(c, "weights_only") != Some(Lit::Str("True".into()))
        {
            self.emit(&r::B614, range, "Use of unsafe PyTorch load");
        }
        self.huggingface(c, qual, name);
        // B701
        if has_part("jinja2") && name == "Environment" {
            self.jinja2(c);
        }
        // B702
        if has_part("mako") && name == "Template" {
            self.emit(&r::B702, range,
                "Mako templates allow HTML/JS rendering by default and are inherently open to XSS attacks. Ensure variables in all templates are properly sanitized via the 'n', 'h' or 'x' flags (depending on context). For example, to HTML escape the variable 'data' do ${ data |h }.");
        }
        // B703
        if matches!(
            name,
            "mark_safe" | "SafeText" | "SafeUnicode" | "SafeString" | "SafeBytes"
        ) && self.imported_like("django.utils.safestring")
            && let Some(arg) = c.args.first()
            && const_str(arg).is_none()
            && !self.mark_safe_is_secure(arg, c)
        {
            self.emit(&r::B703, range, "Potential XSS on mark_safe function.");
        }
        // B704
        if (qual == "markupsafe.Markup" || qual == "flask.Markup")
            && c.args
                .first()
                .is_some_and(|a| !matches!(a, Expr::Constant(_)))
        {
            self.emit(&r::B704, range, format!(
                "Potential XSS with ``{qual}`` detected. Do not use ``{name}`` on untrusted data."));
        }

        // B608 through "...".format(...) / .replace(...)
        if let Expr::Attribute(a) = c.func.as_ref()
            && let Some(s) = const_str(&a.value)
        {
            let attr = a.attr.as_str();
            if attr == "format" || attr == "replace" {
                self.sql(
                    a.value.range(),
                    s,
                    is_execute_call(parent),
                    attr == "replace",
                );
            }
        }
    }

    pub(in crate::rules) fn tarfile(&mut self, c: &ast::ExprCall) {
        if let Some(k) = keyword(c, "filter")
            && const_str(&k.value) == Some("data")
        {
            return;
        }
        let range = c.range;
        match keyword(c, "members").map(|k| &k.value) {
            Some(Expr::Call(f)) => {
                let Expr::Name(n) = f.func.as_ref() else { return };
                self.emit_rated(&r::B202, S::Low, C::Low, range, format!(
                    "Usage of tarfile.extractall(members=function(tarfile)). Make sure your function properly discards dangerous members ({{'Function': '{}'}}).", n.id), None);
            }
            Some(other) => {
                let shown = match other {
                    Expr::Name(n) => format!("'{}'", n.id),
                    _ => "<expression>".to_owned(),
                };
                self.emit_rated(&r::B202, S::Medium, C::Medium, range, format!(
                    "Found tarfile.extractall(members=?) but couldn't identify the type of members. Check if the members were properly validated ({{'Other': {shown}}})."), None);
            }
            None => self.emit(&r::B202, range,
                "tarfile.extractall used without any validation. Please check and discard dangerous members."),
        }
    }

    pub(in crate::rules) fn huggingface(&mut self, c: &ast::ExprCall, qual: &str, name: &str) {
        let required = match name {
            "from_pretrained" => "transformers",
            "load_dataset" => "datasets",
            "hf_hub_download" | "snapshot_download" | "repository_id" => "huggingface_hub",
            _ => return,
        };
        if !["transformers", "datasets", "huggingface_hub"]
            .iter()
            .any(|m| self.imported_like(m))
        {
            return;
        }
        if !qual.split('.').any(|p| p == required) {
            return;
        }
        for k in ["revision", "commit_id"] {
            if keyword(c, k).is_some_and(|k| !matches!(k.value, Expr::Constant(_))) {
                return;
            }
        }
        let rev = kw_value(c, "revision")
            .filter(Lit::truthy)
            .or_else(|| kw_value(c, "commit_id"));
        if let Some(Lit::Str(s)) = rev {
            let s = s.trim_matches(['"', '\'']);
            if s.len() >= 7 && s.chars().all(|ch| ch.is_ascii_hexdigit()) {
                return;
            }
        }
        if let Lit::Str(first) = pos(c, 0)
            && (first.starts_with("./") || first.starts_with('/') || first.starts_with("../"))
        {
            return;
        }
        self.emit(
            &r::B615,
            c.range,
            format!("Unsafe Hugging Face Hub download without revision pinning in {name}()"),
        );
    }

    pub(in crate::rules) fn jinja2(&mut self, c: &ast::ExprCall) {
        let range = c.range;
        let mut keywords: Vec<&ast::Keyword> = c.keywords.iter().collect();
        let mut i = 0;
        // Bandit walks the whole call, so autoescape in a nested call counts too.
        let mut queue: Vec<&Expr> = c
            .args
            .iter()
            .chain(c.keywords.iter().map(|k| &k.value))
            .collect();
        while let Some(e) = queue.pop() {
            if let Expr::Call(inner) = e {
                keywords.extend(inner.keywords.iter());
                queue.extend(
                    inner
                        .args
                        .iter()
                        .chain(inner.keywords.iter().map(|k| &k.value)),
                );
            }
        }
        while i < keywords.len() {
            let k = keywords[i];
            i += 1;
            if k.arg.as_ref().is_none_or(|a| a.as_str() != "autoescape") {
                continue;
            }
            match &k.value {
                Expr::Constant(v) if matches!(v.value, Constant::Bool(false)) => {
                    self.emit(&r::B701, range, "Using jinja2 templates with autoescape=False is dangerous and can lead to XSS. Use autoescape=True or use the select_autoescape function to mitigate XSS vulnerabilities.");
                    return;
                }
                Expr::Constant(v) if matches!(v.value, Constant::Bool(true)) => return,
                Expr::Call(f) if called_name(f) == Some("select_autoescape") => return,
                _ => {
                    self.emit_rated(&r::B701, S::High, C::Medium, range, "Using jinja2 templates with autoescape=False is dangerous and can lead to XSS. Ensure autoescape=True or use the select_autoescape function to mitigate XSS vulnerabilities.", None);
                    return;
                }
            }
        }
        self.emit(&r::B701, range, "By default, jinja2 sets autoescape to False. Consider using autoescape=True or use the select_autoescape function to mitigate XSS vulnerabilities.");
    }
}

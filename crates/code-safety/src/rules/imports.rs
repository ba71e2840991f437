//! The import policy (`AF001`), imports of modules that load code by name or path (`AF002`),
//! and imports of native-code and process-control modules (`AF108`, `AF109`). Bandit's import
//! black-list (`B4xx`) is checked here too, because it looks at the same statements.

use rustpython_parser::ast;
use rustpython_parser::text_size::TextRange;

use super::{Analyzer, blacklist};
use crate::policy::ImportDecision;
use crate::rules::catalog as r;
use crate::source::nfkc;

pub(super) const NATIVE_MODULES: &[&str] = &["ctypes", "_ctypes", "cffi"];
pub(super) const PROCESS_MODULES: &[&str] = &["signal", "_signal", "resource"];
pub(super) const IMPORTER_MODULES: &[&str] = &[
    "importlib.util",
    "importlib.machinery",
    "importlib._bootstrap",
    "importlib._bootstrap_external",
    "runpy",
    "pkgutil",
    "zipimport",
    "imp",
];
pub(super) const IMPORT_STATE: &[&str] =
    &["modules", "meta_path", "path_hooks", "path_importer_cache"];

pub(super) fn module_in(module: &str, list: &[&'static str]) -> Option<&'static str> {
    list.iter().copied().find(|m| {
        module == *m
            || (module.len() > m.len()
                && module.starts_with(m)
                && module.as_bytes()[m.len()] == b'.')
    })
}

impl Analyzer<'_> {
    pub(in crate::rules) fn import(&mut self, i: &ast::StmtImport) {
        let names: Vec<String> = i
            .names
            .iter()
            .map(|a| nfkc(a.name.as_str()).into_owned())
            .collect();
        for (a, name) in i.names.iter().zip(&names) {
            if let Some(asname) = &a.asname {
                self.aliases
                    .insert(nfkc(asname.as_str()).into_owned(), name.clone());
            }
            self.imports.insert(name.clone());
            self.modules.insert(name.clone());
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        if let Some((entry, msg)) = blacklist::match_import("", &refs) {
            self.emit(entry.rule, i.range, msg);
        }
        for (a, name) in i.names.iter().zip(&names) {
            self.module_policy(name, a.asname.is_none(), i.range, &format!("import {name}"));
        }
    }

    pub(in crate::rules) fn import_from(&mut self, i: &ast::StmtImportFrom) {
        let module = i.module.as_ref().map(|m| nfkc(m.as_str()).into_owned());
        let level = i.level.map_or(0, |l| l.to_u32());
        let names: Vec<String> = i
            .names
            .iter()
            .map(|a| nfkc(a.name.as_str()).into_owned())
            .collect();
        for (a, name) in i.names.iter().zip(&names) {
            let asname = a.asname.as_ref().map(|s| nfkc(s.as_str()).into_owned());
            match &module {
                None => {
                    if let Some(asname) = asname {
                        self.aliases.insert(asname, name.clone());
                    }
                    self.imports.insert(name.clone());
                }
                Some(m) => {
                    let full = format!("{m}.{name}");
                    self.aliases
                        .insert(asname.unwrap_or_else(|| name.clone()), full.clone());
                    self.imports.insert(full);
                }
            }
        }
        let prefix = module.as_ref().map(|m| format!("{m}.")).unwrap_or_default();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        if let Some((entry, msg)) = blacklist::match_import(&prefix, &refs) {
            self.emit(entry.rule, i.range, msg);
        }
        let shown = format!(
            "from {}{} import {}",
            ".".repeat(level as usize),
            module.as_deref().unwrap_or(""),
            names.join(", ")
        );
        if level > 0 {
            if !self.policy.imports.allow_relative {
                self.emit(&r::AF001, i.range, format!(
                    "`{shown}`: relative imports are not allowed by the policy; import allowed modules by absolute name"));
            }
            return;
        }
        let Some(m) = module else { return };
        self.modules.insert(m.clone());
        for name in &names {
            if name == "*" {
                self.module_policy(&m, false, i.range, &shown);
                continue;
            }
            let full = format!("{m}.{name}");
            let decision = match self.policy.imports.decide(&full) {
                ImportDecision::NotAllowed => self.policy.imports.decide(&m),
                d => d,
            };
            self.report_decision(decision, &m, i.range, &shown);
            self.escape_module(&full, i.range, &shown);
            if m == "sys" && IMPORT_STATE.contains(&name.as_str()) {
                self.emit(
                    &r::AF002,
                    i.range,
                    format!("`{shown}`: sys.{name} controls which code every later import runs"),
                );
            }
        }
        self.escape_module(&m, i.range, &shown);
    }

    /// AF001 and the module-level escape rules for one imported module name.
    pub(in crate::rules) fn module_policy(
        &mut self,
        module: &str,
        binds_top: bool,
        range: TextRange,
        shown: &str,
    ) {
        let decision = self.policy.imports.decide(module);
        let allowed = decision == ImportDecision::Allowed;
        self.report_decision(decision, module, range, shown);
        if allowed
            && binds_top
            && let Some((top, _)) = module.split_once('.')
            && !self.policy.imports.allows(top)
        {
            self.emit(&r::AF001, range, format!(
                        "`{shown}` also binds `{top}`, which is not on the import allow-list; write `import {module} as name` or `from {} import {}`",
                        module.rsplit_once('.').map_or(top, |p| p.0),
                        module.rsplit('.').next().unwrap_or(module)));
        }
        self.escape_module(module, range, shown);
    }

    pub(in crate::rules) fn report_decision(
        &mut self,
        decision: ImportDecision,
        module: &str,
        range: TextRange,
        shown: &str,
    ) {
        match decision {
            ImportDecision::Allowed => {}
            ImportDecision::NotAllowed => {
                let allowed = self.policy.imports.allow.join(", ");
                self.emit(&r::AF001, range, format!(
                    "`{shown}`: module `{module}` is not on the import allow-list (allowed: {allowed})"));
            }
            ImportDecision::Denied(p) => {
                self.emit(&r::AF001, range, format!(
                    "`{shown}`: module `{module}` is denied by the import policy (pattern `{p}`)"));
            }
        }
    }

    pub(in crate::rules) fn escape_module(&mut self, module: &str, range: TextRange, shown: &str) {
        if let Some(m) = module_in(module, NATIVE_MODULES) {
            self.emit(
                &r::AF108,
                range,
                format!("`{shown}`: `{m}` runs native code outside Python's safety checks"),
            );
        }
        if let Some(m) = module_in(module, PROCESS_MODULES) {
            self.emit(
                &r::AF109,
                range,
                format!("`{shown}`: `{m}` changes signals or resource limits of the process"),
            );
        }
        if let Some(m) = module_in(module, IMPORTER_MODULES) {
            self.emit(
                &r::AF002,
                range,
                format!("`{shown}`: `{m}` loads modules by path or computed name"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_lists_match_submodules() {
        assert_eq!(module_in("ctypes.util", NATIVE_MODULES), Some("ctypes"));
        assert_eq!(module_in("ctypesx", NATIVE_MODULES), None);
        assert_eq!(
            module_in("importlib.util", IMPORTER_MODULES),
            Some("importlib.util")
        );
        assert_eq!(module_in("importlib", IMPORTER_MODULES), None);
    }
}

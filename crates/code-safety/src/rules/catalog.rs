//! Every rule this crate knows, with bandit's ids, names, ratings and CWE numbers.

use crate::finding::{Confidence, Cwe, Rule, RuleKind, Severity};

use Confidence as C;
use Severity as S;

macro_rules! rules {
    ($($ident:ident = $id:literal, $name:literal, $kind:ident, $sev:ident, $conf:ident, $cwe:literal, $fix:literal;)*) => {
        $(
            #[doc = concat!("`", $id, "` ", $name, ".")]
            pub static $ident: Rule = Rule {
                id: $id,
                name: $name,
                kind: RuleKind::$kind,
                severity: S::$sev,
                confidence: C::$conf,
                cwe: Cwe($cwe),
                fix: $fix,
            };
        )*
        /// All rules, in id order.
        pub static ALL: &[&Rule] = &[$(&$ident),*];
    };
}

rules! {
    B101 = "B101", "assert_used", Bandit, Low, High, 703, "Raise an exception instead of using assert for checks that must hold at run time.";
    B102 = "B102", "exec_used", Bandit, Medium, High, 78, "Remove exec(); call the code directly.";
    B103 = "B103", "set_bad_file_permissions", Bandit, Medium, High, 732, "Use a mode that does not grant group/other write or execute, such as 0o600 or 0o644.";
    B104 = "B104", "hardcoded_bind_all_interfaces", Bandit, Medium, Medium, 605, "Bind to 127.0.0.1 or a configured address instead of 0.0.0.0.";
    B105 = "B105", "hardcoded_password_string", Bandit, Low, Medium, 259, "Read secrets from configuration or the environment instead of hard-coding them.";
    B106 = "B106", "hardcoded_password_funcarg", Bandit, Low, Medium, 259, "Pass secrets from configuration instead of string literals.";
    B107 = "B107", "hardcoded_password_default", Bandit, Low, Medium, 259, "Do not give password parameters a literal default.";
    B108 = "B108", "hardcoded_tmp_directory", Bandit, Medium, Medium, 377, "Use the tempfile module (tempfile.mkstemp, TemporaryDirectory) instead of fixed /tmp paths.";
    B110 = "B110", "try_except_pass", Bandit, Low, High, 703, "Handle or log the exception, or catch a narrower exception type.";
    B112 = "B112", "try_except_continue", Bandit, Low, High, 703, "Handle or log the exception before continuing, or catch a narrower type.";
    B113 = "B113", "request_without_timeout", Bandit, Medium, Low, 400, "Pass an explicit timeout= (for example timeout=10) to the HTTP call.";
    B201 = "B201", "flask_debug_true", Bandit, High, Medium, 94, "Do not run Flask with debug=True.";
    B202 = "B202", "tarfile_unsafe_members", Bandit, High, High, 22, "Pass filter=\"data\" to extractall or validate members first.";
    B324 = "B324", "hashlib", Bandit, High, High, 327, "Use SHA-256 or better, or pass usedforsecurity=False for non-security hashing.";
    B501 = "B501", "request_with_no_cert_validation", Bandit, High, High, 295, "Keep certificate verification on (remove verify=False).";
    B502 = "B502", "ssl_with_bad_version", Bandit, High, High, 327, "Use ssl.PROTOCOL_TLS_CLIENT / TLS 1.2 or newer.";
    B503 = "B503", "ssl_with_bad_defaults", Bandit, Medium, Medium, 327, "Use a TLS 1.2+ protocol constant as the default.";
    B504 = "B504", "ssl_with_no_version", Bandit, Low, Medium, 327, "Use ssl.create_default_context() or name a TLS 1.2+ version.";
    B505 = "B505", "weak_cryptographic_key", Bandit, High, High, 326, "Use at least 2048-bit RSA/DSA keys or a 224-bit+ elliptic curve.";
    B506 = "B506", "yaml_load", Bandit, Medium, High, 20, "Use yaml.safe_load() or Loader=yaml.SafeLoader.";
    B507 = "B507", "ssh_no_host_key_verification", Bandit, High, Medium, 295, "Use paramiko.RejectPolicy and load known host keys.";
    B508 = "B508", "snmp_insecure_version_check", Bandit, Medium, High, 319, "Use SNMPv3 (UsmUserData) instead of v1/v2c community strings.";
    B509 = "B509", "snmp_crypto_check", Bandit, Medium, High, 319, "Give UsmUserData both an auth and a privacy key.";
    B601 = "B601", "paramiko_calls", Bandit, Medium, Medium, 78, "Do not build remote shell commands from input; quote with shlex.quote.";
    B602 = "B602", "subprocess_popen_with_shell_equals_true", Bandit, High, High, 78, "Pass the command as a list and drop shell=True.";
    B603 = "B603", "subprocess_without_shell_equals_true", Bandit, Low, High, 78, "Make sure no argument of the subprocess call comes from untrusted input.";
    B604 = "B604", "any_other_function_with_shell_equals_true", Bandit, Medium, Low, 78, "Drop shell=True.";
    B605 = "B605", "start_process_with_a_shell", Bandit, High, High, 78, "Use subprocess.run([...]) with an argument list instead of os.system/os.popen.";
    B606 = "B606", "start_process_with_no_shell", Bandit, Low, Medium, 78, "Avoid starting processes; if needed use subprocess.run with a fixed argument list.";
    B607 = "B607", "start_process_with_partial_path", Bandit, Low, High, 78, "Call the executable by its absolute path.";
    B608 = "B608", "hardcoded_sql_expressions", Bandit, Medium, Medium, 89, "Use parameterised queries (cursor.execute(sql, params)) instead of building SQL strings.";
    B609 = "B609", "linux_commands_wildcard_injection", Bandit, High, Medium, 155, "Do not pass shell wildcards to chown/chmod/tar/rsync; list the files explicitly.";
    B610 = "B610", "django_extra_used", Bandit, Medium, Medium, 89, "Use the Django ORM or parameterised raw queries instead of extra().";
    B611 = "B611", "django_rawsql_used", Bandit, Medium, Medium, 89, "Pass a constant SQL string and params to RawSQL.";
    B612 = "B612", "logging_config_insecure_listen", Bandit, Medium, High, 94, "Pass verify= to logging.config.listen or do not use it.";
    B613 = "B613", "trojansource", Bandit, High, Medium, 838, "Remove bidirectional control characters from the source.";
    B614 = "B614", "pytorch_load", Bandit, Medium, High, 502, "Pass weights_only=True to torch.load.";
    B615 = "B615", "huggingface_unsafe_download", Bandit, Medium, High, 494, "Pin revision= to a commit hash.";
    B701 = "B701", "jinja2_autoescape_false", Bandit, High, High, 94, "Create the jinja2 Environment with autoescape=True or select_autoescape().";
    B702 = "B702", "use_of_mako_templates", Bandit, Medium, High, 80, "Escape every template variable (| h) or use an auto-escaping template engine.";
    B703 = "B703", "django_mark_safe", Bandit, Medium, High, 80, "Escape the value (django.utils.html.format_html) instead of mark_safe.";
    B704 = "B704", "markupsafe_markup_xss", Bandit, Medium, High, 79, "Escape untrusted data (markupsafe.escape) instead of wrapping it in Markup.";

    B301 = "B301", "pickle", BanditBlacklist, Medium, High, 502, "Use json or another data-only format instead of pickle-style deserialisation.";
    B302 = "B302", "marshal", BanditBlacklist, Medium, High, 502, "Use json instead of marshal.";
    B303 = "B303", "md5", BanditBlacklist, Medium, High, 327, "Use SHA-256 or better.";
    B304 = "B304", "ciphers", BanditBlacklist, High, High, 327, "Use AES (for example AES-GCM from the cryptography package).";
    B305 = "B305", "cipher_modes", BanditBlacklist, Medium, High, 327, "Use an authenticated mode such as GCM instead of ECB.";
    B306 = "B306", "mktemp_q", BanditBlacklist, Medium, High, 377, "Use tempfile.mkstemp() or NamedTemporaryFile instead of mktemp().";
    B307 = "B307", "eval", BanditBlacklist, Medium, High, 78, "Use ast.literal_eval() for data, or call the code directly.";
    B308 = "B308", "mark_safe", BanditBlacklist, Medium, High, 79, "Escape the value instead of mark_safe.";
    B310 = "B310", "urllib_urlopen", BanditBlacklist, Medium, High, 22, "Check the URL scheme is http(s) before opening it.";
    B311 = "B311", "random", BanditBlacklist, Low, High, 330, "Use the secrets module for anything security-related.";
    B312 = "B312", "telnetlib", BanditBlacklist, High, High, 319, "Use SSH instead of telnet.";
    B313 = "B313", "xml_bad_cElementTree", BanditBlacklist, Medium, High, 20, "Parse XML with defusedxml.";
    B314 = "B314", "xml_bad_ElementTree", BanditBlacklist, Medium, High, 20, "Parse XML with defusedxml.";
    B315 = "B315", "xml_bad_expatreader", BanditBlacklist, Medium, High, 20, "Parse XML with defusedxml.";
    B316 = "B316", "xml_bad_expatbuilder", BanditBlacklist, Medium, High, 20, "Parse XML with defusedxml.";
    B317 = "B317", "xml_bad_sax", BanditBlacklist, Medium, High, 20, "Parse XML with defusedxml.";
    B318 = "B318", "xml_bad_minidom", BanditBlacklist, Medium, High, 20, "Parse XML with defusedxml.";
    B319 = "B319", "xml_bad_pulldom", BanditBlacklist, Medium, High, 20, "Parse XML with defusedxml.";
    B321 = "B321", "ftplib", BanditBlacklist, High, High, 319, "Use SFTP/SCP instead of FTP.";
    B323 = "B323", "unverified_context", BanditBlacklist, Medium, High, 295, "Use ssl.create_default_context().";
    B401 = "B401", "import_telnetlib", BanditBlacklist, High, High, 319, "Use SSH instead of telnet.";
    B402 = "B402", "import_ftplib", BanditBlacklist, High, High, 319, "Use SFTP/SCP instead of FTP.";
    B403 = "B403", "import_pickle", BanditBlacklist, Low, High, 502, "Use json or another data-only format.";
    B404 = "B404", "import_subprocess", BanditBlacklist, Low, High, 78, "Avoid starting processes from generated code.";
    B405 = "B405", "import_xml_etree", BanditBlacklist, Low, High, 20, "Use defusedxml.ElementTree.";
    B406 = "B406", "import_xml_sax", BanditBlacklist, Low, High, 20, "Use defusedxml.sax.";
    B407 = "B407", "import_xml_expat", BanditBlacklist, Low, High, 20, "Use defusedxml.expatbuilder.";
    B408 = "B408", "import_xml_minidom", BanditBlacklist, Low, High, 20, "Use defusedxml.minidom.";
    B409 = "B409", "import_xml_pulldom", BanditBlacklist, Low, High, 20, "Use defusedxml.pulldom.";
    B411 = "B411", "import_xmlrpclib", BanditBlacklist, High, High, 20, "Call defusedxml.xmlrpc.monkey_patch() or avoid xmlrpc.";
    B412 = "B412", "import_httpoxy", BanditBlacklist, High, High, 284, "Do not use CGI handlers.";
    B413 = "B413", "import_pycrypto", BanditBlacklist, High, High, 327, "Use the cryptography package instead of pyCrypto.";
    B415 = "B415", "import_pyghmi", BanditBlacklist, High, High, 319, "Use an encrypted management protocol instead of IPMI.";

    AF001 = "AF001", "disallowed_import", AetherFlow, High, High, 829, "Use only modules on the allow-list; rewrite the code without this import.";
    AF002 = "AF002", "dynamic_import", AetherFlow, High, High, 829, "Use a plain `import name` statement for an allowed module; do not import by computed name or touch sys.modules/importlib loaders.";
    AF101 = "AF101", "dunder_walk", AetherFlow, High, High, 693, "Do not reach interpreter internals through dunder or frame attributes; use the objects' public API.";
    AF102 = "AF102", "dynamic_attribute", AetherFlow, High, Medium, 470, "Access the attribute by its literal name (obj.name) instead of getattr/setattr/delattr with a computed or dunder name.";
    AF103 = "AF103", "namespace_write", AetherFlow, High, High, 914, "Assign variables normally instead of writing into globals()/locals()/vars().";
    AF104 = "AF104", "code_execution", AetherFlow, High, High, 95, "Do not run code from strings (exec/eval/compile); write the logic directly.";
    AF105 = "AF105", "code_object_construction", AetherFlow, High, High, 94, "Define classes and functions with class/def statements instead of building them through type() or types.*Type.";
    AF106 = "AF106", "debugger_breakpoint", AetherFlow, Medium, High, 489, "Remove breakpoint()/pdb calls.";
    AF107 = "AF107", "interactive_input", AetherFlow, Medium, High, 400, "Do not read from the terminal with input(); take values as function arguments or configuration.";
    AF108 = "AF108", "native_code_access", AetherFlow, High, High, 676, "Do not use ctypes/cffi; write pure Python.";
    AF109 = "AF109", "process_control", AetherFlow, High, High, 676, "Do not fork, send signals or change resource limits; the sandbox manages processes.";
    AF110 = "AF110", "decoded_code_execution", AetherFlow, High, High, 506, "Do not decode data (base64/codecs/zlib/hex) and execute or import it.";
    AF111 = "AF111", "format_string_dunder", AetherFlow, High, High, 134, "Do not reach dunder attributes from format fields; format plain values.";
}

/// Looks a rule up by id (`B101`) or by name (`assert_used`), as `# nosec` comments name them.
pub fn find(id_or_name: &str) -> Option<&'static Rule> {
    ALL.iter()
        .copied()
        .find(|r| r.id.eq_ignore_ascii_case(id_or_name) || r.name == id_or_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_findable() {
        let mut ids: Vec<_> = ALL.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        let before = ids.len();
        ids.dedup();
        assert_eq!(before, ids.len());
        assert_eq!(find("b101").map(|r| r.id), Some("B101"));
        assert_eq!(find("hashlib").map(|r| r.id), Some("B324"));
        assert!(find("B999").is_none());
    }

    #[test]
    fn blacklist_links_follow_bandit_docs() {
        assert_eq!(
            B403.more_info().as_deref(),
            Some(
                "https://bandit.readthedocs.io/en/latest/blacklists/blacklist_imports.html#b403-import-pickle"
            )
        );
        assert_eq!(
            B101.more_info().as_deref(),
            Some("https://bandit.readthedocs.io/en/latest/plugins/b101_assert_used.html")
        );
        assert_eq!(B305.bandit_test_name(), "blacklist");
        assert!(AF101.more_info().is_none());
    }
}

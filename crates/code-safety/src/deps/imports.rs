//! Third-party imports: which distribution provides a module, and whether it is allowed.

use std::collections::BTreeSet;

use super::{DependencyPolicy, DependencyReport, RequirementSummary, check_name, normalize};

/// Top-level modules whose distribution has a different name.
const IMPORT_TO_DISTRIBUTION: &[(&str, &str)] = &[
    ("yaml", "pyyaml"),
    ("PIL", "pillow"),
    ("sklearn", "scikit-learn"),
    ("skimage", "scikit-image"),
    ("cv2", "opencv-python"),
    ("bs4", "beautifulsoup4"),
    ("dateutil", "python-dateutil"),
    ("dotenv", "python-dotenv"),
    ("jwt", "pyjwt"),
    ("Crypto", "pycryptodome"),
    ("Cryptodome", "pycryptodomex"),
    ("OpenSSL", "pyopenssl"),
    ("attr", "attrs"),
    ("google", "protobuf"),
    ("magic", "python-magic"),
    ("serial", "pyserial"),
    ("usb", "pyusb"),
    ("git", "gitpython"),
    ("MySQLdb", "mysqlclient"),
    ("zmq", "pyzmq"),
    ("jose", "python-jose"),
    ("docx", "python-docx"),
    ("pptx", "python-pptx"),
    ("multipart", "python-multipart"),
    ("slugify", "python-slugify"),
    ("websocket", "websocket-client"),
    ("fitz", "pymupdf"),
    ("win32api", "pywin32"),
    ("telegram", "python-telegram-bot"),
    ("Levenshtein", "python-levenshtein"),
];

fn stdlib() -> &'static BTreeSet<&'static str> {
    static STDLIB: std::sync::LazyLock<BTreeSet<&'static str>> = std::sync::LazyLock::new(|| {
        include_str!("../../data/stdlib-modules.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    });
    &STDLIB
}

/// Whether a top-level module belongs to the CPython standard library.
pub fn is_stdlib(module: &str) -> bool {
    let top = module.split('.').next().unwrap_or(module);
    stdlib().contains(top)
}

/// The distribution that provides a top-level import (`yaml` → `pyyaml`), normalised.
pub fn distribution_for_import(module: &str) -> String {
    let top = module.split('.').next().unwrap_or(module);
    IMPORT_TO_DISTRIBUTION
        .iter()
        .find(|(m, _)| *m == top)
        .map_or_else(|| normalize(top), |(_, d)| (*d).to_owned())
}

/// Checks the third-party modules a file imports (for example `ScanReport::imports`): each
/// distribution must be allowed and must not look like a typo-squat. Standard-library modules
/// are skipped; `declared` are distributions the project's requirements already list, which are
/// checked there instead. Leave out modules that belong to the generated project itself (its
/// own files), which would otherwise be taken for unknown distributions.
pub fn check_imports<'m>(
    imports: impl IntoIterator<Item = &'m str>,
    declared: &[String],
    policy: &DependencyPolicy,
) -> DependencyReport {
    let mut report = DependencyReport::default();
    let declared: BTreeSet<String> = declared.iter().map(|d| normalize(d)).collect();
    let mut seen = BTreeSet::new();
    for module in imports {
        if is_stdlib(module) || module.starts_with('.') || module == "__future__" {
            continue;
        }
        let dist = distribution_for_import(module);
        if declared.contains(&dist) || !seen.insert(dist.clone()) {
            continue;
        }
        report.requirements.push(RequirementSummary {
            name: dist.clone(),
            specifier: String::new(),
            line: 0,
        });
        check_name(&dist, 0, policy, &mut report);
    }
    report
}

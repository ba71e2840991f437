//! The configuration a user copies must work: `aetherflow.example.toml` loads, and
//! `.env.example` names every variable AetherFlow reads keys from.

use std::collections::HashMap;
use std::path::PathBuf;

use aetherflow_bootstrap::Environment;
use aetherflow_orchestrator::settings::KEY_VARIABLES;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_example_config_file_loads_as_is() {
    let dir = tempfile::tempdir().expect("dir");
    let example = repo().join("aetherflow.example.toml");
    let env = Environment::from_parts(HashMap::new(), dir.path(), Some(&example))
        .expect("aetherflow.example.toml is a valid configuration");
    assert_eq!(env.settings.run.concurrency, 4);
    assert_eq!(env.settings.server.bind, "127.0.0.1:8080");
}

#[test]
fn the_env_example_documents_every_key_variable() {
    let text = std::fs::read_to_string(repo().join(".env.example")).expect(".env.example");
    for (_, vars) in KEY_VARIABLES {
        for var in *vars {
            assert!(text.contains(var), ".env.example does not mention {var}");
        }
    }
    let example = std::fs::read_to_string(repo().join("aetherflow.example.toml")).expect("toml");
    let mut section = String::new();
    for line in example.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            section = name.to_ascii_uppercase().replace('.', "__");
        } else if let Some((key, _)) = line.trim_start_matches("# ").split_once(" = ")
            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            let var = format!("AETHERFLOW_{section}__{}", key.to_ascii_uppercase());
            assert!(text.contains(&var), ".env.example does not mention {var}");
        }
    }
}

/// Every key a section accepts, as serde lists them when it refuses an unknown one.
fn accepted_keys(section: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("probe.toml");
    std::fs::write(&file, format!("[{section}]\nzz_not_a_key = 1\n")).expect("write");
    let error = match Environment::from_parts(HashMap::new(), dir.path(), Some(&file)) {
        Ok(_) => panic!("[{section}] accepted an unknown key"),
        Err(e) => e.to_string(),
    };
    let list = error
        .split_once("expected one of ")
        .or_else(|| error.split_once("expected "))
        .unwrap_or_else(|| panic!("[{section}]: no key list in {error}"))
        .1;
    list.split(',')
        .filter_map(|k| {
            let k = k.trim();
            let k = k.strip_prefix('`')?;
            Some(k[..k.find('`')?].to_owned())
        })
        .collect()
}

#[test]
fn the_configuration_reference_documents_every_key() {
    let doc = std::fs::read_to_string(repo().join("docs/configuration.md"))
        .expect("docs/configuration.md");
    let mut sections = vec![
        "run",
        "context",
        "log",
        "mock",
        "server",
        "providers",
        "retry",
        "breaker",
        "fallback",
        "cache",
        "budget",
        "alerts",
        "sandbox",
        "review",
        "redis",
        "telemetry",
        "gateway",
        "queue",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    // The top level itself: every section must be in the list above.
    let top = accepted_keys_top();
    for section in &top {
        assert!(
            sections.contains(section) || section == "prices",
            "a new section `[{section}]`: document it in docs/configuration.md and add it here"
        );
    }
    for provider in [
        "deepseek",
        "gemini",
        "groq",
        "codestral",
        "kimi",
        "openai_compatible",
    ] {
        sections.push(format!("providers.{provider}"));
    }
    let mut checked = 0;
    for section in &sections {
        for key in accepted_keys(section) {
            let path = format!("{section}.{key}");
            // Nested sections are documented key by key.
            if sections.contains(&path) {
                continue;
            }
            assert!(
                doc.contains(&format!("`{path}`")),
                "docs/configuration.md does not document `{path}`"
            );
            checked += 1;
        }
    }
    assert!(
        checked > 60,
        "only {checked} keys found: is the probe broken?"
    );
}

/// The sections the top level accepts.
fn accepted_keys_top() -> Vec<String> {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("probe.toml");
    std::fs::write(&file, "zz_not_a_section = 1\n").expect("write");
    let error = match Environment::from_parts(HashMap::new(), dir.path(), Some(&file)) {
        Ok(_) => panic!("an unknown top-level key was accepted"),
        Err(e) => e.to_string(),
    };
    let list = error
        .split_once("expected one of ")
        .unwrap_or_else(|| panic!("no key list in {error}"))
        .1;
    list.split(',')
        .filter_map(|k| {
            let k = k.trim().strip_prefix('`')?;
            Some(k[..k.find('`')?].to_owned())
        })
        .collect()
}

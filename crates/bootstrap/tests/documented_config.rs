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

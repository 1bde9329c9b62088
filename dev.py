#!/usr/bin/env python3
"""One entry point for a fresh machine that has only Python 3.11+ and git.

    python3 dev.py run     set up .venv (first time) and run the service with its demo
    python3 dev.py test    set up .venv (first time) and run every gate: ruff, mypy --strict, pytest
    python3 dev.py docs    regenerate the generated documentation (docs/providers.md)

Extra arguments after `test` go to pytest; after `run` they replace the default CLI arguments.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed-from"


def _python() -> Path:
    return BIN / "python"


def ensure_venv() -> None:
    """Create .venv and install the project with its dev extras, again whenever pyproject changes."""
    if sys.version_info < (3, 11):
        sys.exit("mailconnect needs Python 3.11 or newer; this is " + sys.version.split()[0])
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest and _python().exists():
        return
    if not _python().exists():
        print("creating .venv ...", flush=True)
        try:
            venv.create(VENV, with_pip=True)
        except Exception as exc:
            sys.exit(
                f"could not create .venv ({exc}); on Debian/Ubuntu: apt-get install python3-venv"
            )
    print("installing mailconnect and its development tools into .venv ...", flush=True)
    pip = [str(_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(digest)


def run(cmd: list[str]) -> int:
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"run", "test", "docs", "lint"}:
        print(__doc__)
        return 2
    ensure_venv()
    action, rest = argv[0], argv[1:]
    mc = str(BIN / "mailconnect")
    if action == "run":
        # The main job: the service on its embedded defaults (SQLite in ./data, a generated key),
        # with the demo capture server, tenant, API key and connection. Arguments replace it.
        return run([mc, *(rest or ["serve", "--demo"])])
    if action == "docs":
        return run([mc, "providers", "docs", "--output", str(ROOT / "docs" / "providers.md")])
    py = str(_python())
    code_dirs = [d for d in ("src", "tests", "benchmarks", "dev.py") if (ROOT / d).exists()]
    gates = [
        [py, "-m", "ruff", "check", *code_dirs],
        [py, "-m", "ruff", "format", "--check", *code_dirs],
        [py, "-m", "mypy"],
        [str(BIN / "mailconnect"), "providers", "docs", "--check", "--output", "docs/providers.md"],
    ]
    if action == "test":
        gates.append([py, "-m", "pytest", *rest])
    for gate in gates:
        code = run(gate)
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

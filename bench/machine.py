"""What every benchmark records about where it ran: the machine, and which paymux code it measured."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import paymux


def code_version() -> dict[str, str]:
    """Which paymux was measured: where it was imported from, the commit of the work tree holding it (`+dirty`
    when its files differ from the commit) and a hash of its source, which names the code even outside git."""
    package = Path(paymux.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    commit = "not in a git work tree"
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=package, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "."], cwd=package, capture_output=True, text=True
        )
        commit = head + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    return {"paymux": str(package), "commit": commit, "source_sha256": digest.hexdigest()[:16]}


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "code": code_version(),
    }

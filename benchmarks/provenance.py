"""What a committed benchmark figure records about the code that made it."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit(root: Path | None = None) -> str:
    """The HEAD commit of the checkout at ``root`` (this one by default), with ``+dirty`` when
    tracked files other than committed results (``benchmarks/results``, ``docs/results``) differ
    from it, or "unknown"."""
    root = root or Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results", ":(exclude)docs/results"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit

"""Which code and machine made a result.

Experiments write ``provenance()`` into results.json and ``code_identity()`` into each run's
``code.json`` (a cached run is reused only by the code that made it); benchmarks write
``git_commit()`` beside their figures. The field names are the ones committed results carry.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # the checkout
# The code that decides what a run trains: its digest tells whether a cached run is this code's.
TRAINING_CODE = (
    "tfcroloss/*.py", "models/*.py", "pipelines/files.py", "pipelines/data/dataset.py", "pipelines/data/inputs.py",
    "pipelines/data/shards.py",
    "pipelines/retrieval/__init__.py", "pipelines/retrieval/base.py", "pipelines/retrieval/exact.py",
    "pipelines/training/*.py",
)
# Another Keras's losses; the experiment's spec, orchestration and reports; the tuner.
NOT_TRAINING = {"keras3.py", "experiment_spec.py", "experiment.py", "report.py", "tune.py", "intervals.py"}
PACKAGES = ("tensorflow", "tf-keras", "tensorflow-recommenders", "scann", "numpy", "tfcroloss")
COMMITTED_RESULTS = ("benchmarks/results", "docs/results")  # rewriting these does not make the code dirty


def _git(root: Path, *args: str) -> str | None:
    """Git's output, unstripped (a porcelain line starts with a space), or None without git or a checkout."""
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit(root: Path | None = None) -> str:
    """The HEAD commit of the checkout at ``root`` (this one by default), with ``+dirty`` when
    tracked files other than committed results (``COMMITTED_RESULTS``) differ from it, or "unknown"."""
    root = root or ROOT
    commit = _git(root, "rev-parse", "HEAD")
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".",
                 *(f":(exclude){path}" for path in COMMITTED_RESULTS))
    if commit is None or dirty is None:
        return "unknown"
    return f"{commit.strip()}+dirty" if dirty.strip() else commit.strip()


def training_files() -> list[Path]:
    """The files whose content decides what a run trains and reports (``TRAINING_CODE``)."""
    files = set()
    for pattern in TRAINING_CODE:
        files.update(path for path in ROOT.glob(pattern) if path.name not in NOT_TRAINING)
    return sorted(files)


def code_digest() -> str:
    """A digest of the training code's source files (the loss, model, inputs, training,
    evaluation), as they are on disk; edits to, e.g., readers or serving do not count."""
    digest = hashlib.sha256()
    for path in training_files():
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def code_identity() -> dict[str, Any]:
    """The commit, the uncommitted training-code files, and the training code's digest."""
    dirty = _git(ROOT, "status", "--porcelain", "--", *(path.relative_to(ROOT).as_posix()
                                                        for path in training_files()))
    commit = _git(ROOT, "rev-parse", "HEAD")
    return {
        "commit": commit and commit.strip(),
        "uncommitted": sorted(line[3:] for line in (dirty or "").splitlines()),
        "code_digest": code_digest(),
    }


def provenance() -> dict[str, Any]:
    """What made a set of results: code, package versions, machine, and when."""
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        **code_identity(),
        "python": sys.version.split()[0],
        "packages": packages,
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count()},
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

"""Which code and machine made a result: one implementation for experiments and benchmarks."""

import json
import subprocess
from pathlib import Path

from tfcroloss.pipelines import provenance
from tfcroloss.pipelines.provenance import git_commit

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def commit_all(root):
    git(root, "add", ".")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")


def test_git_commit_is_dirty_for_code_changes_not_for_committed_results(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "results" / "speed.json").write_text("{}\n")
    commit_all(tmp_path)
    clean = git_commit(tmp_path)
    assert len(clean) == 40 and not clean.endswith("+dirty")

    (tmp_path / "benchmarks" / "results" / "speed.json").write_text('{"new": 1}\n')
    assert git_commit(tmp_path) == clean  # a rewritten result does not make the code dirty
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == f"{clean}+dirty"


def test_git_commit_outside_a_checkout_is_unknown(tmp_path):
    assert git_commit(tmp_path) == "unknown"


def test_code_identity_follows_the_training_code_only(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    for name in ("tfcroloss/losses.py", "pipelines/training/train.py", "pipelines/training/report.py",
                 "pipelines/serving/http.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    git(tmp_path, "init", "-q")
    commit_all(tmp_path)
    clean = provenance.code_identity()
    assert clean["uncommitted"] == [] and len(clean["commit"]) == 40

    (tmp_path / "pipelines/serving/http.py").write_text("x = 2\n")  # not training code
    (tmp_path / "pipelines/training/report.py").write_text("x = 2\n")
    assert provenance.code_identity() == clean
    (tmp_path / "pipelines/training/train.py").write_text("x = 2\n")
    edited = provenance.code_identity()
    assert edited["code_digest"] != clean["code_digest"]
    assert edited["uncommitted"] == ["pipelines/training/train.py"]


def test_provenance_keeps_the_fields_committed_results_carry():
    committed = json.loads((RESULTS / "ml-100k" / "results.json").read_text())["provenance"]
    made = provenance.provenance()
    assert set(made) == set(committed)
    assert set(made["machine"]) == set(committed["machine"]) and set(made["packages"]) == set(committed["packages"])

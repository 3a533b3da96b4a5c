import subprocess

from benchmarks.provenance import git_commit


def git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_git_commit_is_dirty_for_code_changes_not_for_committed_results(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "results" / "speed.json").write_text("{}\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    clean = git_commit(tmp_path)
    assert len(clean) == 40 and not clean.endswith("+dirty")

    (tmp_path / "benchmarks" / "results" / "speed.json").write_text('{"new": 1}\n')
    assert git_commit(tmp_path) == clean  # a rewritten result does not make the code dirty
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == f"{clean}+dirty"


def test_git_commit_outside_a_checkout_is_unknown(tmp_path):
    assert git_commit(tmp_path) == "unknown"

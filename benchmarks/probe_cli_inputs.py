"""Probe: the `tfcroloss` commands on bad input, counted by outcome.

Each case is a mistake a user makes: a broken or mistyped config, a ``--set`` typo, a wrong type,
a value out of range, a missing or wrong file or directory, a typo'd command or flag. The cases
cover ``train``, ``evaluate``, ``experiment``, ``tune``, ``export``, ``index``, ``recommend`` and
``serve``. A tiny prepared data set is made first; the full probe also trains and exports a tiny
model for the cases that need one (``{M}``), ``--quick`` runs a few cases without it. The probe runs
the CLI in process on each and sorts the outcome: ``one_line`` (exit status 2, one error line),
``usage`` (argparse's usage and error line, exit status 2), ``accepted`` (the command ran: the
case was not a mistake after all) or ``traceback`` (anything else: the target is 0). A refused
``train`` must also leave no run directory behind (``left_run_dir``). Prints one JSON object per
case, then a summary; the full probe also writes them to ``benchmarks/results/probe_cli_inputs.json``
with the commit that made them.

    python -m benchmarks.probe_cli_inputs [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import socket
import sys
import tempfile
import traceback
from collections import Counter
from pathlib import Path
from unittest import mock

from tfcroloss.pipelines import cli
from tfcroloss.pipelines.files import atomic_write_text
from tfcroloss.pipelines.provenance import provenance

RESULT = Path(__file__).parent / "results" / "probe_cli_inputs.json"

# (command, case, arguments after the command, in --quick); "{W}" is the work directory, "{M}" the
# tiny exported model (saved_models/NAME), "{R}" its run and "{P}" a port in use. The train cases add
# --run-dir {W}/runs/<case>; "good.yaml" is a valid config of the tiny data set.
GOOD = "--config {W}/good.yaml"
TRAIN_SETS = {
    "loss key typo": "loss.alpah=1.2", "loss kernel key typo": "loss.kernal=sigmoid",
    "loss kernel name typo": "loss.kernel=sigmoidd", "negative alpha": "loss.alpha=-1",
    "alpha not a number": "loss.alpha=abc", "num_items set": "loss.num_items=abc",
    "unknown loss": "loss.name=crolos", "baseline with alpha": "loss.name=bpr",
    "margin a list": "loss.margin=[1]", "unknown weighting": "loss.weighting=linear",
    "infinite alpha": "loss.alpha=.inf", "learning rate infinite": "training.learning_rate=.inf",
    "learning rate 1e30": "training.learning_rate=1e30", "temperature infinite": "model.temperature_scale=.inf",
    "temperature 1e30": "model.temperature_scale=1e30", "patience -1": "training.patience=-1", "patience 0": "training.patience=0",
    "seed -1": "training.seed=-1", "seed float": "training.seed=1.5", "seed huge": "training.seed=1099511627776",
    "batch 0": "training.batch_size=0", "batch huge": "training.batch_size=1000000000000",
    "batch a word": "training.batch_size=big", "batch above the catalog": "training.batch_size=100000",
    "max_steps 0": "training.max_steps=0", "eval_every -1": "training.eval_every=-1",
    "learning rate 0": "training.learning_rate=0", "learning rate nan": "training.learning_rate=.nan",
    "learning rate a word": "training.learning_rate=fast", "unknown strategy": "training.strategy=mirror",
    "unknown optimizer": "training.optimizer=sgdd", "multi_worker without TF_CONFIG": "training.strategy=multi_worker",
    "parameter_server without TF_CONFIG": "training.strategy=parameter_server",
    "validation users -5": "evaluation.validation_users=-5", "validation users 0": "evaluation.validation_users=0",
    "ns empty": "evaluation.ns=[]", "ns zero": "evaluation.ns=[0]", "ns a word": "evaluation.ns=abc",
    "ns a float": "evaluation.ns=[10.5]", "select_on not in ns": "evaluation.select_on=recall@7",
    "select_on unknown metric": "evaluation.select_on=precision@10", "unknown index": "evaluation.index=faiss",
    "embedding 0": "model.embedding_dim=0", "hidden 0": "model.hidden_dims=[0]", "hidden not a list": "model.hidden_dims=5",
    "hidden words": "model.hidden_dims=[a]", "unknown tower": "model.tower=lstm", "temperature 0": "model.temperature_scale=0",
    "unknown initializer": "model.item_initializer=zeros", "unknown negatives mode": "negatives.mode=hard",
    "per_positive 0": "negatives.per_positive=0", "negatives above the catalog": "negatives.per_positive=100000",
    "correction for sampled": "negatives.correction=log_q", "maxlen 0": "data.maxlen=0", "unknown scheme": "data.scheme=epochs",
    "data path missing": "data.path={W}/nowhere", "data path a file": "data.path={W}/afile.txt",
    "data path not prepared": "data.path={W}/emptydir", "unknown section": "trainig.seed=2",
    "no key": "training=1", "no section": ".seed=1", "no equals sign": "training.seed",
    "bad YAML value": "model.hidden_dims=[", "section typo of a real key": "model.embeding_dim=8",
}
QUICK_SETS = {"loss key typo", "num_items set", "learning rate infinite", "temperature infinite", "hidden 0", "patience -1", "seed huge", "batch above the catalog", "ns a word",
              "unknown section", "no equals sign", "data path missing", "validation users -5"}
# Config files (relative to {W}) and what they hold; "good.yaml" and the tiny data set are made first.
FILES: dict[str, str | bytes] = {
    "broken.yaml": "data: {path: x\n",
    "latin1.yaml": b"data: {path: caf\xe9}\n",
    "empty.yaml": "",
    "list.yaml": "- data\n- model\n",
    "unknown-section.yaml": "data: {path: x}\ntrainig: {seed: 1}\n",
    "scalar-section.yaml": "data: {path: x}\ntraining: 5\n",
    "evaluation5.yaml": "data: {path: x}\nevaluation: 5\n",
    "experiment-broken.yaml": "base: [\n",
    "experiment-list.yaml": "- 1\n",
    "afile.txt": "not a directory\n",
    "runs-a-file": "",
    "run-bad-config/config.yaml": "data: {path: [\n",
    "run-relative/config.yaml": "data: {path: somewhere/prepared}\n",
    "models/nonnumeric/abc/saved_model.pb": "",
    "models/emptyversion/1/.keep": "",
    "models/garbage/1/saved_model.pb": "garbage",
}
CASES: list[tuple[str, str, str, bool]] = [
    *[("train", f"--set {name}", f"{GOOD} --set {value}", name in QUICK_SETS) for name, value in TRAIN_SETS.items()],
    ("train", "evaluation: 5 then --set evaluation.ns", "--config {W}/evaluation5.yaml --set evaluation.ns=[10]", True),
    ("train", "config missing", "--config {W}/missing.yaml", True),
    ("train", "config a directory", "--config {W}/emptydir", False),
    ("train", "config YAML error", "--config {W}/broken.yaml", True),
    ("train", "config not UTF-8", "--config {W}/latin1.yaml", False),
    ("train", "config empty", "--config {W}/empty.yaml", False),
    ("train", "config a list", "--config {W}/list.yaml", False),
    ("train", "config unknown section", "--config {W}/unknown-section.yaml", False),
    ("train", "config section a number", "--config {W}/scalar-section.yaml", False),
    ("train", "run dir a file", f"{GOOD} --run-dir {{W}}/runs-a-file", True),
    ("train", "run dir under a file", f"{GOOD} --run-dir {{W}}/afile.txt/run", False),
    ("train", "unknown --strategy", f"{GOOD} --strategy mirror", False),
    ("train", "flag typo", "--confg {W}/good.yaml", True),
    ("train", "no --config", "", False),
    ("evaluate", "run missing", "--run {W}/nowhere", True),
    ("evaluate", "run a file", "--run {W}/afile.txt", False),
    ("evaluate", "run empty", "--run {W}/emptydir", False),
    ("evaluate", "run config broken", "--run {W}/run-bad-config", False),
    ("evaluate", "run without weights", "--run {W}/run-no-weights", True),
    ("evaluate", "run with a relative data path", "--run {W}/run-relative", False),
    ("evaluate", "--n 0", "--run {W}/run-no-weights --n 0", True),
    ("evaluate", "--n a word", "--run {W}/run-no-weights --n ten", False),
    ("evaluate", "unknown --index", "--run {W}/run-no-weights --index faiss", False),
    ("evaluate", "--split train", "--run {W}/run-no-weights --split train", False),
    ("experiment", "file missing", "--config {W}/missing.yaml", True),
    ("experiment", "YAML error", "--config {W}/experiment-broken.yaml", True),
    ("experiment", "a list", "--config {W}/experiment-list.yaml", False),
    ("experiment", "a run config", "--config {W}/good.yaml", False),
    ("tune", "--target-n 0", f"{GOOD} --target-n 0", False),
    ("tune", "--alpha-range a word", f"{GOOD} --target-n 10 --alpha-range big --output {{W}}/tune", True),
    ("tune", "unknown kernel", f"{GOOD} --target-n 10 --kernels softplus,sigmoidd --output {{W}}/tune", False),
    ("tune", "--budget 0", f"{GOOD} --target-n 10 --budget 0", False),
    ("tune", "--set typo", f"{GOOD} --target-n 10 --set loss.alpah=1", False),
    ("tune", "config missing", "--config {W}/missing.yaml --target-n 10", False),
    ("export", "run missing", "--run {W}/nowhere --output {W}/models/out", True),
    ("export", "run without weights", "--run {W}/run-no-weights --output {W}/models/out", False),
    ("export", "run config broken", "--run {W}/run-bad-config --output {W}/models/out", False),
    ("export", "--version a word", "--run {W}/run-no-weights --output {W}/models/out --version one", False),
    ("export", "no --output", "--run {W}/run-no-weights", False),
    ("index", "model missing", "--model {W}/nowhere/1", True),
    ("index", "model a file", "--model {W}/afile.txt", False),
    ("index", "model empty", "--model {W}/emptydir", False),
    ("index", "version without a model", "--model {W}/models/emptyversion/1", False),
    ("index", "garbage saved model", "--model {W}/models/garbage/1", False),
    ("index", "-k 0", "--model {W}/models/emptyversion/1 -k 0", True),
    ("index", "-k -5", "--model {W}/models/emptyversion/1 -k -5", False),
    ("index", "--num-leaves 0", "--model {W}/models/emptyversion/1 --num-leaves 0", False),
    ("index", "unknown --scoring", "--model {W}/models/emptyversion/1 --scoring best", False),
    ("recommend", "model missing", "--model {W}/nowhere --history a,b", True),
    ("recommend", "model a file", "--model {W}/afile.txt --history a,b", False),
    ("recommend", "model empty", "--model {W}/emptydir --history a,b", False),
    ("recommend", "non-numeric version", "--model {W}/models/nonnumeric --history a,b", False),
    ("recommend", "version without a model", "--model {W}/models/emptyversion --history a,b", False),
    ("recommend", "garbage saved model", "--model {W}/models/garbage --history a,b", False),
    ("recommend", "-k 0", "--model {W}/models/emptyversion --history a,b -k 0", True),
    ("recommend", "-k a word", "--model {W}/models/emptyversion --history a,b -k ten", False),
    ("recommend", "unknown --index", "--model {W}/models/emptyversion --history a --index faiss", False),
    ("serve", "model missing", "--model {W}/nowhere", True),
    ("serve", "model a file", "--model {W}/afile.txt", False),
    ("serve", "model empty", "--model {W}/emptydir", False),
    ("serve", "garbage saved model", "--model {W}/models/garbage", False),
    ("serve", "--port -1", "--model {W}/models/emptyversion --port -1", True),
    ("serve", "--port 99999", "--model {W}/models/emptyversion --port 99999", False),
    ("serve", "port in use", "--model {W}/models/emptyversion --port {P}", True),
    ("serve", "host not of this machine", "--model {W}/models/emptyversion --host 192.0.2.1", False),
    ("serve", "--max-batch 0", "--model {W}/models/emptyversion --max-batch 0", False),
    ("serve", "--poll-seconds -1", "--model {W}/models/emptyversion --poll-seconds -1", False),
    ("serve", "--tf-threads -1", "--model {W}/models/emptyversion --tf-threads -1", False),
    ("serve", "unknown --log-level", "--model {W}/models/emptyversion --log-level loud", False),
    ("serve", "command typo", "", False),  # `tfcroloss serv`
    ("train", "another run's directory", f"{GOOD} --run-dir {{R}} --set loss.alpha=2", False),
    ("export", "--version 0", "--run {R} --output {M} --version 0", False),
    ("export", "--version -1", "--run {R} --output {M} --version -1", False),
    ("export", "--version taken", "--run {R} --output {M} --version 1", False),
    ("export", "output a file", "--run {R} --output {W}/afile.txt", False),
    # the recommend cases come before the index cases: no ScaNN index is built yet
    ("recommend", "real model -k 0", "--model {M} --history 1,2 -k 0", False),
    ("recommend", "real model -k -1", "--model {M} --history 1,2 -k -1", False),
    ("recommend", "real model --history empty", "--model {M} --history ,", False),
    ("recommend", "real model --index scann without an index", "--model {M} --history 1,2 --index scann", False),
    ("index", "real model -k 0", "--model {M}/1 --overwrite -k 0", False),
    ("index", "real model -k -5", "--model {M}/1 --overwrite -k -5", False),
    ("index", "real model --num-leaves 0", "--model {M}/1 --overwrite --num-leaves 0", False),
    ("index", "real model --leaves-to-search 0", "--model {M}/1 --overwrite --leaves-to-search 0", False),
    ("index", "real model --reorder -1", "--model {M}/1 --overwrite --reorder -1", False),
    ("index", "real model --sample-queries 0", "--model {M}/1 --overwrite --sample-queries 0", False),
    ("index", "real model a directory of versions", "--model {M}", False),
    ("index", "real model --num-leaves 10000000", "--model {M}/1 --overwrite --num-leaves 10000000", False),
    ("index", "real model --partition --num-leaves 10000000", "--model {M}/1 --overwrite --partition --num-leaves 10000000",
     False),
    ("index", "real model --partition --leaves-to-search 0", "--model {M}/1 --overwrite --partition --leaves-to-search 0",
     False),
    ("index", "real model more leaves searched than leaves",
     "--model {M}/1 --overwrite --partition --num-leaves 10 --leaves-to-search 11", False),
    ("index", "real model -k above the catalog", "--model {M}/1 --overwrite -k 1000000000", False),
    ("index", "real model --sample-queries -5", "--model {M}/1 --overwrite --sample-queries -5", False),
    ("index", "real model agreement below the floor",
     "--model {M}/1 --overwrite --partition --num-leaves 100 --leaves-to-search 1", False),
    ("recommend", "real model index recorded below the floor", "--model {W}/models/low-agreement --history 1,2", False),
    ("serve", "real model --port -1", "--model {M} --port -1", False),
    ("serve", "real model --port 99999", "--model {M} --port 99999", False),
    ("serve", "real model --tf-threads -1", "--model {M} --tf-threads -1", False),
    ("serve", "real model --max-history 0", "--model {M} --max-history 0", False),
    ("serve", "real model --batch-delay-ms -1", "--model {M} --batch-delay-ms -1", False),
    ("serve", "real model --poll-seconds 0", "--model {M} --poll-seconds 0", False),
    ("serve", "real model port in use", "--model {M} --port {P}", False),
]


class _WouldServe(Exception):
    """Raised instead of starting the HTTP server: the command accepted its input."""


def _setup(workdir: Path) -> None:
    from tfcroloss.pipelines.data.prepare import prepare_file
    from tfcroloss.pipelines.data.synthetic import write_synthetic
    from tfcroloss.pipelines.training import config as config_lib

    write_synthetic(workdir / "log.txt", "tiny", seed=0)
    prepare_file("comirec", workdir / "log.txt", workdir / "prepared")
    good = config_lib.from_dict({
        "data": {"path": str(workdir / "prepared"), "maxlen": 10},
        "loss": {"name": "croloss", "kernel": "softplus", "alpha": 1.0},
        "model": {"embedding_dim": 8, "hidden_dims": [8]},
        "negatives": {"per_positive": 1},
        "training": {"batch_size": 16, "max_steps": 2, "eval_every": 2, "patience": 1},
        "evaluation": {"ns": [5, 10], "select_on": "recall@10"},
    })
    (workdir / "good.yaml").write_text(good.to_yaml())
    (workdir / "emptydir").mkdir()
    (workdir / "run-no-weights").mkdir()
    (workdir / "run-no-weights" / "config.yaml").write_text(good.to_yaml())
    for name, content in FILES.items():
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


def _trained_model(workdir: Path) -> None:
    """Trains the good config a few steps ({R}) and exports it ({M}, version 1); a copy of the
    version, models/low-agreement, gets an index whose build.json records agreement 0 (as one
    built before the floor was checked)."""
    low = workdir / "models" / "low-agreement"
    with contextlib.redirect_stdout(io.StringIO()):
        for argv in (["train", "--config", str(workdir / "good.yaml"), "--run-dir", str(workdir / "run-real")],
                     ["export", "--run", str(workdir / "run-real"), "--output", str(low)],
                     ["export", "--run", str(workdir / "run-real"), "--output", str(workdir / "models" / "real")],
                     ["index", "--model", str(low / "1"), "-k", "10"]):
            if cli.main(argv) != 0:
                raise RuntimeError(f"probe set-up failed: tfcroloss {' '.join(argv)}")
    build_file = low / "1" / "index" / "build.json"
    build_file.write_text(json.dumps({**json.loads(build_file.read_text()), "agreement@10": 0.0}))


def run_case(workdir: Path, port: int, command: str, name: str, arguments: str) -> dict:
    places = {"{W}": workdir, "{M}": workdir / "models" / "real", "{R}": workdir / "run-real", "{P}": port}
    argv = [command, *re.sub(r"\{[WMRP]\}", lambda match: str(places[match.group()]), arguments).split()]
    if name == "command typo":
        argv[0] = command[:-1]
    run_dir = workdir / "runs" / re.sub(r"\W+", "_", name)
    if command == "train" and "--run-dir" not in argv:
        argv += ["--run-dir", str(run_dir)]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
                mock.patch("uvicorn.run", side_effect=_WouldServe), mock.patch.dict(os.environ, {"TF_CONFIG": ""}):
            status = cli.main(argv)
    except _WouldServe:
        status = 0
    except SystemExit as exit_:  # argparse: usage and one error line
        status = exit_.code
        if status == 2:
            return {"command": command, "case": name, "outcome": "usage", "message": err.getvalue().strip()[-300:]}
    except BaseException:  # noqa: BLE001 - the probe counts it
        return {"command": command, "case": name, "outcome": "traceback", "detail": traceback.format_exc()[-800:]}
    message = err.getvalue().strip()
    if status == 0:
        outcome = "accepted"
    elif status == 2 and message.count("\n") == 0 and message.startswith("tfcroloss "):
        outcome = "one_line"
    else:
        outcome = "traceback"
    result = {"command": command, "case": name, "outcome": outcome, "exit_status": status, "message": message[:400]}
    if command == "train" and status != 0 and run_dir.exists():
        result["left_run_dir"] = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"a few cases of each command (for the test); the full probe writes {RESULT}")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as workdir, socket.create_server(("127.0.0.1", 0)) as taken:
        _setup(Path(workdir))
        if not args.quick:
            _trained_model(Path(workdir))
        for command, name, arguments, quick in CASES:
            if quick or not args.quick:
                result = run_case(Path(workdir), taken.getsockname()[1], command, name, arguments)
                results.append(result)
                print(json.dumps(result), flush=True)
    counts = Counter(result["outcome"] for result in results)
    summary = {
        "tried": len(results),
        "one_line_errors": counts["one_line"],
        "usage_errors": counts["usage"],
        "accepted": [f"{r['command']}: {r['case']}" for r in results if r["outcome"] == "accepted"],
        "tracebacks": counts["traceback"],
        "traceback_cases": [f"{r['command']}: {r['case']}" for r in results if r["outcome"] == "traceback"],
        "left_run_dir": [f"{r['command']}: {r['case']}" for r in results if r.get("left_run_dir")],
        "machine": f"{os.cpu_count()} cpus",
    }
    print(json.dumps(summary), flush=True)
    if not args.quick:
        payload = {"provenance": provenance(), "summary": summary, "cases": results}
        atomic_write_text(RESULT, json.dumps(payload, indent=2) + "\n")
    return 0 if not (summary["tracebacks"] or summary["accepted"] or summary["left_run_dir"]) else 1


if __name__ == "__main__":
    sys.exit(main())

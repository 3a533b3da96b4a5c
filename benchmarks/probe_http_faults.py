"""Probe: the HTTP service (`tfcroloss serve`) under bad requests and faults, counted by answer.

Serves an exported version (``--model``, else a tiny model trained and exported here) in process
on 127.0.0.1, polling its model directory every 0.2 s, and tries:

- bad requests, the client's mistakes, to every endpoint: each must be a 4xx carrying the API's
  JSON error (``{"detail": ...}``; TF Serving's ``{"error": ...}`` under ``/v1/``);
- version copies, as TF Serving would take them: a complete copy (a newer folder), a renumbered
  one (exported as 1, copied to 7: served as 7 by every endpoint and the metrics), a half-copied
  one (reported without server paths while the previous version serves, then served once
  complete), the served one removed (the newest remaining is served), all removed (no version:
  503 with ``Retry-After``, TF Serving's 404 under ``/v1/``) and one put back;
- the index process killed (versions loaded while serving search in a child process): lookups
  are 200 or 503 with ``Retry-After`` until the version is reloaded, ``/health`` says 503 meanwhile.

Every answer is counted (2xx, 4xx, 5xx) and ``wrong`` when it is not what the case expects
(status, JSON shape, version number, an absolute server path in the body). ``--quick`` (run by a
test) tries a third of the bad requests and leaves out two version loads. Prints one JSON object per case, then a summary; the
full run writes benchmarks/results/http_faults.json: the git commit, the summary and the statuses
answered in each case.

    python -m benchmarks.probe_http_faults [--quick] [--model VERSION_DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tfcroloss.pipelines.provenance import git_commit
from tfcroloss.pipelines.serving.app import create_app
from tfcroloss.pipelines.serving.version import EXTRA_DIR, METADATA_PATH

RESULTS = Path(__file__).parent / "results"
NAME = "tiny"
LIMITS = {"max_history": 20, "max_batch": 4, "max_id_length": 32, "max_body_bytes": 4096, "max_queue": 64}
PREDICT = f"/v1/models/{NAME}:predict"
TOP_K = {"signature_name": "top_k"}

# (case, method, path, body): a dict or list is sent as JSON, bytes as they are. Each must get a
# 4xx with the API's JSON error, except those in MAY_SUCCEED (a 2xx is right too, never a 5xx).
BAD_REQUESTS: list[tuple[str, str, str, Any]] = [
    ("recommend: not JSON", "POST", "/recommend", b"{nope"),
    ("recommend: body a list", "POST", "/recommend", [1, 2]),
    ("recommend: body a string", "POST", "/recommend", "history"),
    ("recommend: no history", "POST", "/recommend", {"k": 3}),
    ("recommend: history a string", "POST", "/recommend", {"history": "item1"}),
    ("recommend: history of numbers", "POST", "/recommend", {"history": [1, 2]}),
    ("recommend: history of nulls", "POST", "/recommend", {"history": [None]}),
    ("recommend: history empty", "POST", "/recommend", {"history": []}),
    ("recommend: k 0", "POST", "/recommend", {"history": ["a"], "k": 0}),
    ("recommend: k -5", "POST", "/recommend", {"history": ["a"], "k": -5}),
    ("recommend: k above the catalog", "POST", "/recommend", {"history": ["a"], "k": 10**9}),
    ("recommend: k beyond 64 bits", "POST", "/recommend", b'{"history": ["a"], "k": 100000000000000000000000}'),
    ("recommend: k a string", "POST", "/recommend", {"history": ["a"], "k": "10"}),
    ("recommend: k null", "POST", "/recommend", {"history": ["a"], "k": None}),
    ("recommend: k 2.5", "POST", "/recommend", {"history": ["a"], "k": 2.5}),
    ("recommend: k NaN", "POST", "/recommend", b'{"history": ["a"], "k": NaN}'),
    ("recommend: exclude_history a string", "POST", "/recommend", {"history": ["a"], "exclude_history": "no"}),
    ("recommend: unknown key", "POST", "/recommend", {"history": ["a"], "user": 7}),
    ("recommend: id too long", "POST", "/recommend", {"history": ["x" * 33]}),
    ("recommend: history too long", "POST", "/recommend", {"history": ["a"] * 21}),
    ("recommend: lone surrogate", "POST", "/recommend", b'{"history": ["\\ud800"]}'),
    ("recommend: not UTF-8", "POST", "/recommend", b'{"history": ["\xff"]}'),
    ("recommend: body too large", "POST", "/recommend", {"history": ["a" * 30] * 200}),
    ("recommend: nested 10,000 deep", "POST", "/recommend", b"[" * 10_000 + b"]" * 10_000),
    ("recommend: GET", "GET", "/recommend", None),
    ("recommend: empty body", "POST", "/recommend", b""),
    ("batch: histories empty", "POST", "/recommend/batch", {"histories": []}),
    ("batch: too many histories", "POST", "/recommend/batch", {"histories": [["a"]] * 5}),
    ("batch: an empty history", "POST", "/recommend/batch", {"histories": [["a"], []]}),
    ("batch: histories a list of strings", "POST", "/recommend/batch", {"histories": ["a", "b"]}),
    ("batch: k a list", "POST", "/recommend/batch", {"histories": [["a"]], "k": [3]}),
    ("predict: signature_name a list", "POST", PREDICT, {"signature_name": ["top_k"], "instances": [["a"]]}),
    ("predict: signature_name an object", "POST", PREDICT, {"signature_name": {"top_k": 1}, "instances": [["a"]]}),
    ("predict: signature_name null", "POST", PREDICT, {"signature_name": None, "instances": [["a"]]}),
    ("predict: signature_name a number", "POST", PREDICT, {"signature_name": 5, "instances": [["a"]]}),
    ("predict: unknown signature", "POST", PREDICT, {"signature_name": "nope", "instances": [["a"]]}),
    ("predict: instances and inputs", "POST", PREDICT, {"instances": [["a"]], "inputs": [["a"]]}),
    ("predict: neither instances nor inputs", "POST", PREDICT, {"signature_name": "serving_default"}),
    ("predict: instances empty", "POST", PREDICT, {"instances": []}),
    ("predict: instances a string", "POST", PREDICT, {"instances": "a"}),
    ("predict: instances of numbers", "POST", PREDICT, {"instances": [[1, 2]]}),
    ("predict: instances nested too deep", "POST", PREDICT, {"instances": [[["a"]]]}),
    ("predict: instances of mixed kinds", "POST", PREDICT, {"instances": [{"history": ["a"]}, ["a"]]}),
    ("predict: an unknown input", "POST", PREDICT, {"instances": [{"history": ["a"], "user": 1}]}),
    ("predict: top_k without k", "POST", PREDICT, {**TOP_K, "inputs": {"history": [["a"]]}}),
    ("predict: top_k k 0", "POST", PREDICT, {**TOP_K, "inputs": {"history": [["a"]], "k": 0}}),
    ("predict: top_k k a list", "POST", PREDICT, {**TOP_K, "inputs": {"history": [["a"]], "k": [3]}}),
    ("predict: top_k k a string", "POST", PREDICT, {**TOP_K, "inputs": {"history": [["a"]], "k": "3"}}),
    ("predict: top_k k differs by instance", "POST", PREDICT,
     {**TOP_K, "instances": [{"history": ["a"], "k": 2}, {"history": ["a"], "k": 3}]}),
    ("predict: top_k instances without names", "POST", PREDICT, {**TOP_K, "instances": [["a"]]}),
    ("predict: b64 not base64", "POST", PREDICT, {"instances": [[{"b64": "%%%"}]]}),
    ("predict: b64 a number", "POST", PREDICT, {"instances": [[{"b64": 5}]]}),
    ("predict: too many rows", "POST", PREDICT, {"instances": [["a"]] * 5}),
    ("predict: inputs history a string", "POST", PREDICT, {"inputs": {"history": "a"}}),
    ("predict: inputs history flat", "POST", PREDICT, {"inputs": {"history": ["a", "b"]}}),
    ("predict: unknown key", "POST", PREDICT, {"instances": [["a"]], "examples": []}),
    ("predict: body a list", "POST", PREDICT, [["a"]]),
    ("predict: not JSON", "POST", PREDICT, b"{nope"),
    ("predict: lone surrogate", "POST", PREDICT, b'{"instances": [["\\ud800"]]}'),
    ("predict: body too large", "POST", PREDICT, {"instances": [["a" * 30] * 200]}),
    ("predict: unknown model", "POST", "/v1/models/nope:predict", {"instances": [["a"]]}),
    ("predict: unknown version", "POST", f"/v1/models/{NAME}/versions/99:predict", {"instances": [["a"]]}),
    ("predict: version a word", "POST", f"/v1/models/{NAME}/versions/one:predict", {"instances": [["a"]]}),
    ("predict: version -1", "POST", f"/v1/models/{NAME}/versions/-1:predict", {"instances": [["a"]]}),
    ("predict: GET", "GET", PREDICT, None),
    ("predict: classify", "POST", f"/v1/models/{NAME}:classify", {"examples": [{"a": 1}]}),
    ("predict: an empty history", "POST", PREDICT, {"instances": [[]]}),
    ("predict: top_k, an empty history", "POST", PREDICT, {**TOP_K, "inputs": {"history": [[]], "k": 3}}),
    ("status: unknown model", "GET", "/v1/models/nope", None),
    ("status: unknown version", "GET", f"/v1/models/{NAME}/versions/99", None),
    ("status: version a word", "GET", f"/v1/models/{NAME}/versions/one", None),
    ("metadata: unknown version", "GET", f"/v1/models/{NAME}/versions/99/metadata", None),
    ("metadata: unknown model", "GET", "/v1/models/nope/metadata", None),
    ("v1: no model", "GET", "/v1/models/", None),
    ("health: POST", "POST", "/health", {}),
    ("metrics: POST", "POST", "/metrics", {}),
    ("unknown path", "GET", "/recommendations", None),
]
MAY_SUCCEED = {"predict: an empty history", "predict: top_k, an empty history"}


class Probe:
    """The service under probe, and the answers counted so far."""

    def __init__(self, url: str, app: Any, model_root: Path, workdir: Path):
        self.url, self.app, self.model_root, self.workdir = url, app, model_root, workdir
        self.results: list[dict] = []
        self.client = httpx.Client(base_url=url, timeout=60)

    def ask(self, method: str, path: str, body: Any = None) -> httpx.Response:
        content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        return self.client.request(method, path, content=content, headers={"content-type": "application/json"})

    def record(self, case: str, kind: str, response: httpx.Response, problems: list[str], *, quiet: bool = False) -> None:
        """One answer: ``kind`` is "client" (a bad request) or "fault" (a version change, a killed
        index process); ``problems`` what is wrong with it (none: as expected); ``quiet``: not
        printed (the many lookups of one case)."""
        if str(self.workdir) in response.text or str(self.workdir.resolve()) in response.text:
            problems = [*problems, "a server path in the answer"]
        result = {"case": case, "kind": kind, "path": response.request.url.path, "status": response.status_code,
                  "wrong": problems, "answer": response.text[:200]}
        self.results.append(result)
        if not quiet or problems:
            print(json.dumps(result), flush=True)

    def expect(self, case: str, kind: str, method: str, path: str, body: Any = None, *, status: int,
               check: Callable[[httpx.Response], list[str]] = lambda response: []) -> httpx.Response:
        response = self.ask(method, path, body)
        problems = [] if response.status_code == status else [f"status {response.status_code}, expected {status}"]
        self.record(case, kind, response, problems + (check(response) if not problems else []))
        return response

    def wait_for(self, what: str, condition: Callable[[], bool], seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"probe: {what} did not happen within {seconds:g} s")
            time.sleep(0.05)

    def served_version(self) -> int | None:
        return self.client.get("/health").json().get("model_version")


def error_shape(path: str) -> Callable[[httpx.Response], list[str]]:
    """The API's JSON error: ``{"error": str}`` under /v1/, else ``{"detail": str}``."""
    key = "error" if path.startswith("/v1/") else "detail"

    def check(response: httpx.Response) -> list[str]:
        try:
            body = response.json()
        except ValueError:
            return ["not JSON"]
        return [] if isinstance(body, dict) and set(body) == {key} and isinstance(body[key], str) else [f"not {{{key!r}: ...}}"]

    return check


def bad_requests(probe: Probe, quick: bool) -> None:
    for number, (case, method, path, body) in enumerate(BAD_REQUESTS):
        if quick and number % 3:
            continue
        response = probe.ask(method, path, body)
        problems = error_shape(path)(response) if response.status_code >= 300 else []
        if not (400 <= response.status_code < 500 or (case in MAY_SUCCEED and response.status_code == 200)):
            problems.insert(0, f"status {response.status_code}, expected 4xx")
        probe.record(case, "client", response, problems)


def says_version(version: int) -> list[tuple[str, str, Callable[[Any], Any]]]:
    """Endpoints and how each names the version served."""
    return [
        ("/health", "GET", lambda body: body["model_version"]),
        ("/metadata", "GET", lambda body: body["version"]),
        (f"/v1/models/{NAME}", "GET", lambda body: [s["version"] for s in body["model_version_status"] if s["state"] == "AVAILABLE"]),
        (f"/v1/models/{NAME}/versions/{version}", "GET", lambda body: body["model_version_status"][0]["version"]),
        (f"/v1/models/{NAME}/metadata", "GET", lambda body: body["model_spec"]["version"]),
        ("/recommend", "POST", lambda body: body["model_version"]),
    ]


def check_served(probe: Probe, case: str, version: int) -> None:
    """Every endpoint, the metrics included, names ``version``."""
    wanted = {int: version, str: str(version), list: [str(version)]}
    for path, method, read in says_version(version):
        body = {"history": ["nope"], "k": 2} if method == "POST" else None

        def check(response: httpx.Response, read: Callable = read) -> list[str]:
            said = read(response.json())
            return [] if said == wanted[type(said)] else [f"says version {said}, expected {version}"]

        probe.expect(f"{case}: {path}", "fault", method, path, body, status=200, check=check)
    metrics = probe.ask("GET", "/metrics")
    found = re.search(r"^tfcroloss_model_version (\S+)$", metrics.text, re.M)
    said = None if found is None else float(found.group(1))
    probe.record(f"{case}: /metrics", "fault", metrics, [] if said == version else [f"says version {said}, expected {version}"])


def copy_version(source: Path, target: Path) -> None:
    """A complete copy: written under a hidden name, then renamed into place (as `tfcroloss export`)."""
    hidden = target.parent / f".{target.name}.copy"
    shutil.copytree(source, hidden)
    hidden.rename(target)


def versions(probe: Probe, model: Path, quick: bool) -> None:
    """``quick`` leaves out the two loads that the other cases repeat: version 2, and version 9
    once complete (the half copy is then removed as it is)."""
    root = probe.model_root
    if not quick:
        copy_version(model, root / "2")
        probe.wait_for("version 2 served", lambda: probe.served_version() == 2)
        check_served(probe, "complete copy", 2)

    copy_version(model, root / "7")  # export.json says 1
    probe.wait_for("version 7 served", lambda: probe.served_version() == 7)
    check_served(probe, "renumbered copy (exported as 1)", 7)

    half = root / "9"
    half.mkdir()
    shutil.copytree(model / EXTRA_DIR, half / EXTRA_DIR)  # export.json, no SavedModel yet
    probe.wait_for("version 9 seen half-copied", lambda: probe.app.state.watcher.failed is not None)

    def reported(response: httpx.Response) -> list[str]:
        statuses = {s["version"]: s for s in response.json()["model_version_status"]}
        if statuses.get("9", {}).get("state") != "END" or not statuses["9"]["status"]["error_message"]:
            return ["the half-copied version 9 is not reported with its error"]
        return [] if statuses.get("7", {}).get("state") == "AVAILABLE" else ["version 7 is not AVAILABLE"]

    probe.expect("half copy: model status", "fault", "GET", f"/v1/models/{NAME}", status=200, check=reported)
    check_served(probe, "half copy (previous version serves)", 7)
    if not quick:
        for entry in model.iterdir():
            if entry.name != EXTRA_DIR.name:
                (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, half / entry.name)
        probe.wait_for("version 9 served once complete", lambda: probe.served_version() == 9)
        check_served(probe, "half copy completed", 9)

    shutil.rmtree(half)
    probe.wait_for("version 9's removal seen", lambda: probe.served_version() == 7 and probe.app.state.watcher.failed is None)
    check_served(probe, "served version removed (newest remaining)", 7)
    probe.expect("served version removed: its status", "fault", "GET", f"/v1/models/{NAME}/versions/9", status=404,
                 check=error_shape("/v1/"))


def killed_index(probe: Probe) -> None:
    """Kills the served version's index process while lookups arrive (two clients, one every
    20 ms each); counts their answers."""
    retriever = probe.app.state.watcher.current
    pid = retriever.index.pid  # loaded while serving: its index lives in a child process
    stop = threading.Event()

    def lookups() -> list[httpx.Response]:
        answers = []
        with httpx.Client(base_url=probe.url, timeout=60) as client:
            while not stop.wait(0.02):
                answers.append(client.post("/recommend", json={"history": ["nope"], "k": 2}))
        return answers

    with ThreadPoolExecutor(3) as pool:
        running = [pool.submit(lookups) for _ in range(2)]
        os.kill(pid, signal.SIGKILL)
        probe.wait_for("the index process ended", lambda: not retriever.alive, 30)
        health = probe.ask("GET", "/health")
        probe.wait_for("the version reloaded", lambda: probe.app.state.watcher.current is not retriever)
        time.sleep(0.2)
        stop.set()
        answers = [answer for future in running for answer in future.result()]
    unavailable = health.status_code == 503 and health.headers.get("retry-after") == "1" and "reloaded" in health.text
    # the reload may be done before /health is asked
    probe.record("index process killed: /health", "fault", health,
                 [] if unavailable or probe.app.state.watcher.current is not retriever else ["not 503 with the reason"])
    for answer in answers:
        ok = answer.status_code == 200 or (answer.status_code == 503 and answer.headers.get("retry-after") == "1")
        probe.record("index process killed: lookup", "fault", answer, [] if ok else ["not 200, nor 503 with Retry-After"],
                     quiet=True)
    check_served(probe, "index process killed, then reloaded", 7)


def all_removed(probe: Probe, model: Path) -> None:
    root = probe.model_root
    for version in list(root.iterdir()):
        shutil.rmtree(version)
    probe.wait_for("the version unloaded", lambda: probe.app.state.watcher.current is None)
    retry = lambda response: [] if response.headers.get("retry-after") == "1" else ["no Retry-After"]  # noqa: E731
    probe.expect("all removed: /health", "fault", "GET", "/health", status=503, check=retry)
    probe.expect("all removed: /recommend", "fault", "POST", "/recommend", {"history": ["a"]}, status=503, check=retry)
    probe.expect("all removed: predict", "fault", "POST", PREDICT, {"instances": [["a"]]}, status=404,
                 check=error_shape("/v1/"))
    copy_version(model, root / "3")
    probe.wait_for("version 3 served", lambda: probe.app.state.watcher.current is not None)
    check_served(probe, "a version put back", 3)


@contextlib.contextmanager
def serve(model_root: Path) -> Iterator[tuple[str, Any]]:
    app = create_app(model_root, poll_seconds=0.2, **LIMITS)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("probe: the service did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def tiny_export(workdir: Path) -> Path:
    """A tiny model trained a few steps on the tiny synthetic preset, exported (version 1)."""
    from tfcroloss.pipelines.data.prepare import prepare_file
    from tfcroloss.pipelines.data.synthetic import write_synthetic
    from tfcroloss.pipelines.publish import export_run
    from tfcroloss.pipelines.training import config as config_lib
    from tfcroloss.pipelines.training.train import train

    write_synthetic(workdir / "log.txt", "tiny", seed=0)
    prepare_file("comirec", workdir / "log.txt", workdir / "prepared")
    config = config_lib.from_dict({
        "data": {"path": str(workdir / "prepared"), "maxlen": 10},
        "model": {"embedding_dim": 8, "hidden_dims": [8]},
        "negatives": {"per_positive": 2},
        "training": {"batch_size": 16, "max_steps": 4, "eval_every": 4, "patience": 1},
        "evaluation": {"ns": [5, 10], "select_on": "recall@10"},
    })
    train(config, workdir / "run", verbose=0)
    return export_run(workdir / "run", workdir / "export")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer cases (for the test)")
    parser.add_argument("--model", type=Path, help="an exported version directory (default: train a tiny one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        model = args.model or tiny_export(workdir / "made")
        export_version = json.loads((model / METADATA_PATH).read_text())["version"]
        model_root = workdir / "models" / NAME
        model_root.parent.mkdir(parents=True)
        copy_version(model, model_root / "1")
        with serve(model_root) as (url, app):
            probe = Probe(url, app, model_root, workdir)
            bad_requests(probe, args.quick)
            versions(probe, model, args.quick)
            killed_index(probe)
            all_removed(probe, model)
    results = probe.results
    statuses = Counter(f"{result['status'] // 100}xx" for result in results)
    by_case: dict[str, Counter] = {}
    for result in results:
        by_case.setdefault(result["case"], Counter())[str(result["status"])] += 1
    summary = {
        "tried": len(results),
        "answers_2xx": statuses["2xx"], "answers_4xx": statuses["4xx"], "answers_5xx": statuses["5xx"],
        "client_input": sum(result["kind"] == "client" for result in results),
        "client_input_5xx": sum(result["kind"] == "client" and result["status"] >= 500 for result in results),
        "faults_503_with_retry_after": sum(result["kind"] == "fault" and result["status"] == 503 and not result["wrong"]
                                           for result in results),
        "wrong": sum(bool(result["wrong"]) for result in results),
        "wrong_cases": sorted({f"{result['case']}: {'; '.join(result['wrong'])}" for result in results if result["wrong"]}),
        "export_version": export_version,
        "machine": f"{os.cpu_count()} cpus",
    }
    print(json.dumps(summary), flush=True)
    if not args.quick:
        payload = {"git_commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M"), "summary": summary,
                   "statuses_by_case": by_case}
        (RESULTS / "http_faults.json").write_text(json.dumps(payload, indent=2) + "\n")
    return 0 if not (summary["wrong"] or summary["client_input_5xx"]) else 1


if __name__ == "__main__":
    sys.exit(main())

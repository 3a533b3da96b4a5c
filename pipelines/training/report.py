"""An experiment's report: results.json, recall/hit-rate/nDCG tables (markdown and CSV), Recall@N
plots, and the paper's claims checked on the results.

``results`` maps each variant's label to its summary (``experiment.run``): the loss section,
the chosen learning rate, the search, and test ``mean``/``std`` of ``recall@N`` etc. over seeds.
``per_user`` maps each label to its per-user test ``recall@N`` (``[seeds, users]``, kept in the
output's ``per_user_test.npz``): a claim that one loss beats another rests on the paired bootstrap
interval of the two (``intervals``), and a difference whose interval holds zero is a tie.
Results made before per-user metrics were kept have no ``per_user_test.npz``: their claims say so
instead of deciding.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tfcroloss.pipelines.files import atomic_file, atomic_write_text
from tfcroloss.pipelines.training.intervals import Interval, paired_bootstrap

PER_USER_FILE = "per_user_test.npz"
_KEY = "::"  # per_user_test.npz keys: "<label>::recall@N"

if TYPE_CHECKING:
    from tfcroloss.pipelines.training.experiment_spec import Experiment


def read_results(path: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(variants' results, provenance) from a results.json; older files hold the variants only."""
    raw = json.loads(Path(path).read_text())
    if "variants" in raw and "provenance" in raw:
        return raw["variants"], raw["provenance"]
    return raw, None


def _ns(results: dict[str, Any]) -> list[int]:
    any_result = next(iter(results.values()))
    return sorted({int(k.split("@")[1]) for k in any_result["mean"]})


def table_rows(results: dict[str, Any], metric: str = "recall") -> tuple[list[str], list[list[str]]]:
    """Header and rows of "mean ± std" (percent) per variant and N, as the paper's tables."""
    ns = _ns(results)
    header = ["loss", "lr"] + [f"{metric[0].upper()}@{n}" for n in ns]
    rows = []
    for label, result in results.items():
        cells = [f"{100 * result['mean'][f'{metric}@{n}']:.2f} ± {100 * result['std'][f'{metric}@{n}']:.2f}" for n in ns]
        shown = f"{label} ({result['incomplete']})" if result.get("incomplete") else label
        rows.append([shown, f"{result['learning_rate']:g}"] + cells)
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def write_test_per_user(path: Path, per_user: dict[str, dict[str, np.ndarray]]) -> None:
    with atomic_file(path) as tmp, open(tmp, "wb") as file:
        np.savez_compressed(file, **{f"{label}{_KEY}{metric}": values.astype(np.float32)
                                     for label, metrics in per_user.items() for metric, values in metrics.items()})


def read_test_per_user(path: str | Path) -> dict[str, dict[str, np.ndarray]] | None:
    """An experiment's per-user test metrics (``write_test_per_user``), or None where it has none."""
    path = Path(path)
    if not path.exists():
        return None
    per_user: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as data:
        for key in data.files:
            label, metric = key.rsplit(_KEY, 1)
            per_user.setdefault(label, {})[metric] = data[key]
    return per_user


def write_report(experiment: Experiment, results: dict[str, Any], provenance: dict[str, Any] | None = None,
                 per_user: dict[str, dict[str, np.ndarray]] | None = None) -> None:
    """results.json (results and provenance), per_user_test.npz, recall/ndcg tables (markdown and CSV),
    claims and Recall@N plots under ``output``; without ``provenance`` the one in results.json is
    kept, without ``per_user`` the output's per_user_test.npz (if any)."""
    out = experiment.output
    if provenance is None and (out / "results.json").exists():
        provenance = read_results(out / "results.json")[1]
    if per_user is None:
        per_user = read_test_per_user(out / PER_USER_FILE)
    else:
        write_test_per_user(out / PER_USER_FILE, per_user)
    atomic_write_text(out / "results.json", json.dumps({"provenance": provenance, "variants": results}, indent=2) + "\n")
    for metric in ("recall", "hit_rate", "ndcg"):
        header, rows = table_rows(results, metric)
        atomic_write_text(out / f"{metric}.md", markdown_table(header, rows))
        buffer = io.StringIO()
        csv.writer(buffer).writerows([header] + rows)
        atomic_write_text(out / f"{metric}.csv", buffer.getvalue())
    atomic_write_text(out / "claims.md", claims_markdown(results, per_user))
    seeds = f"mean of {len(experiment.seeds)} seeds"
    plot_recall(results, out / "recall_at_n.png", title=f"Recall@N by loss, {seeds}")
    for kernel in sorted({r["loss"].get("kernel") for r in results.values()} - {None}):
        labels = [label for label, r in results.items()
                  if r["loss"]["name"] == "croloss" and r["loss"].get("kernel") == kernel
                  and not r["loss"].get("overrides")]
        if len(labels) > 1:
            plot_recall(results, out / f"recall_by_alpha_{kernel}.png", f"CROLoss {kernel}: Recall@N by alpha, {seeds}", labels)


def plot_recall(results: dict[str, Any], path: Path, title: str, labels: list[str] | None = None) -> None:
    """Recall@N against N (log scale), one curve per variant, as the paper's Figures 3-4."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = _ns(results)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for label in labels or list(results):
        mean = [100 * results[label]["mean"][f"recall@{n}"] for n in ns]
        axis.plot(ns, mean, marker="o", label=label)
    axis.set_xscale("log")
    axis.set_xticks(ns, [str(n) for n in ns])
    axis.set_xlabel("N")
    axis.set_ylabel("Recall@N (%)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)


def _best(results: dict[str, Any], name: str, n: int) -> tuple[str, float] | None:
    """The variant of loss ``name`` with the highest mean test Recall@n."""
    chosen = [(label, r["mean"][f"recall@{n}"]) for label, r in results.items() if r["loss"]["name"] == name]
    return max(chosen, key=lambda item: item[1]) if chosen else None


def _selected_on_validation(results: dict[str, Any], name: str) -> str | None:
    """The variant of loss ``name`` with the best validation score (its tuned learning rate, first seed)."""
    chosen = [(max(r["tuning"].values()), label) for label, r in results.items() if r["loss"]["name"] == name]
    return max(chosen)[1] if chosen else None


def _selected_for_n(results: dict[str, Any], n: int) -> str | None:
    """The CROLoss-family variant (plain or Lambda) with the best validation Recall@n (first seed,
    at its step selected on the experiment's metric); None without per-N validation figures."""
    chosen = [(r["validation"][f"recall@{n}"], label) for label, r in results.items()
              if r["loss"]["name"] in ("croloss", "lambda_croloss") and r.get("validation")
              and f"recall@{n}" in r["validation"]]
    return max(chosen)[1] if chosen else None


def _paired(per_user: dict[str, dict[str, np.ndarray]] | None, ours: str, theirs: str, n: int) -> Interval | None:
    """The paired interval of ``ours`` minus ``theirs`` on per-user test Recall@n, None without the data."""
    metric = f"recall@{n}"
    if per_user is None or metric not in per_user.get(ours, {}) or metric not in per_user.get(theirs, {}):
        return None
    return paired_bootstrap(per_user[ours][metric], per_user[theirs][metric])


def _holds(flag: bool) -> str:
    return "holds" if flag else "does NOT hold"


def _decided(intervals: list[Interval | None]) -> str:
    """A claim that each comparison is a gain: holds when every interval is above zero, does NOT
    hold when one is below, else a tie; each interval shown (relative gain, 95%)."""
    if any(interval is None for interval in intervals):
        return "not claimed: no per-user metrics (results made before they were kept)"
    verdicts = [interval.verdict() for interval in intervals]
    shown = "; ".join(f"{interval.describe()} over {interval.users} users, {interval.seeds[0]} vs "
                      f"{interval.seeds[1]} seeds" for interval in intervals)
    if "worse" in verdicts:
        verdict = "does NOT hold"
    elif "tie" in verdicts:
        verdict = "tie (the paired interval holds zero: cannot be told apart)"
    else:
        verdict = "holds"
    return f"{verdict} ({shown})"


def claims_markdown(results: dict[str, Any], per_user: dict[str, dict[str, np.ndarray]] | None = None) -> str:
    """Checks the paper's claims on test Recall@N, one line per claim and N: means over seeds, and
    for "A beats B" the paired bootstrap interval over users and seeds (``per_user``)."""
    ns = _ns(results)
    lines = ["## The paper's claims on this data (mean test Recall@N over seeds; A beats B when the 95% paired "
             "bootstrap interval of A / B - 1 over users and seeds is above zero)", ""]
    softmax = {n: _best(results, "softmax", n) for n in ns}
    for n in ns:
        best, ce = _best(results, "croloss", n), softmax[n]
        if best and ce:
            lines.append(f"- Recall@{n}: best CROLoss ({best[0]}: {100 * best[1]:.2f}) >= softmax cross-entropy "
                         f"({100 * ce[1]:.2f}): {_decided([_paired(per_user, best[0], ce[0], n)])}")
    for n in ns:
        lam, plain = _best(results, "lambda_croloss", n), _best(results, "croloss", n)
        if lam and plain:
            lines.append(f"- Recall@{n}: best Lambda ({lam[0]}: {100 * lam[1]:.2f}) >= best plain CROLoss "
                         f"({100 * plain[1]:.2f}): {_decided([_paired(per_user, lam[0], plain[0], n)])}")
    base = next((label for label, r in results.items() if r["loss"]["name"] == "softmax"), None)
    chosen = _selected_on_validation(results, "croloss")
    if chosen and base:
        for n in ns:
            gap = results[chosen]["mean"][f"recall@{n}"] - results[base]["mean"][f"recall@{n}"]
            lines.append(f"- Recall@{n}: CROLoss chosen on validation ({chosen}) minus softmax cross-entropy: "
                         f"{100 * gap:+.2f} points: {_decided([_paired(per_user, chosen, base, n)])}")
    for n in ns:
        picked = _selected_for_n(results, n)
        if picked is None or base is None:
            continue
        gap = results[picked]["mean"][f"recall@{n}"] - results[base]["mean"][f"recall@{n}"]
        lines.append(f"- Recall@{n}: CROLoss (plain or Lambda) chosen on validation Recall@{n} ({picked}) minus "
                     f"softmax cross-entropy: {100 * gap:+.2f} points: {_decided([_paired(per_user, picked, base, n)])}")
    kernels = sorted({r["loss"].get("kernel") for r in results.values() if r["loss"]["name"] == "croloss"} - {None})
    for kernel in kernels:
        same = {r["loss"]["alpha"]: r for r in results.values()
                if r["loss"]["name"] == "croloss" and r["loss"].get("kernel") == kernel and "alpha" in r["loss"]}
        if len(same) < 2:
            continue
        best_alpha = [max(same, key=lambda a, n=n: same[a]["mean"][f"recall@{n}"]) for n in ns]
        monotone = all(a >= b for a, b in zip(best_alpha, best_alpha[1:], strict=False))
        pairs = ", ".join(f"N={n}: {a:g}" for n, a in zip(ns, best_alpha, strict=True))
        lines.append(f"- {kernel}: best alpha per N by mean ({pairs}); larger alpha for smaller N: {_holds(monotone)}")
    for n in ns:
        ce, bpr, triplet = softmax[n], _best(results, "bpr", n), _best(results, "triplet", n)
        if ce and bpr and triplet:
            steps = [_paired(per_user, ce[0], bpr[0], n), _paired(per_user, bpr[0], triplet[0], n)]
            lines.append(f"- Recall@{n}: cross-entropy ({100 * ce[1]:.2f}) > BPR ({100 * bpr[1]:.2f}) > triplet "
                         f"({100 * triplet[1]:.2f}): {_decided(steps)}")
    return "\n".join(lines) + "\n"

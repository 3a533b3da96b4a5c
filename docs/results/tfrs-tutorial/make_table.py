"""results.json -> table.md: top-k accuracy per variant, mean and (min-max) over seeds.

    .venv/bin/python docs/results/tfrs-tutorial/make_table.py docs/results/tfrs-tutorial
"""

import json
import sys
from pathlib import Path

import numpy as np

KS = ("top_1", "top_5", "top_10", "top_50", "top_100")


def main(folder):
    folder = Path(folder)
    results = json.loads((folder / "results.json").read_text())["runs"]
    lines = ["| variant | seeds | " + " | ".join(KS) + " |", "| --- | --- |" + " --- |" * len(KS)]
    for variant in dict.fromkeys(r["variant"] for r in results):
        runs = [r for r in results if r["variant"] == variant]
        cells = [f"{np.mean([r[k] for r in runs]):.4f} ({min(r[k] for r in runs):.4f}-{max(r[k] for r in runs):.4f})"
                 for k in KS]
        lines.append(f"| {variant} | {len(runs)} | " + " | ".join(cells) + " |")
    (folder / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:])

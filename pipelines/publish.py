"""Where a trained run becomes a served version: ``export_run`` reads a run directory (training)
and writes an exported version (serving). The one room that imports both phases, besides the CLI."""

from __future__ import annotations

import os
from pathlib import Path

from tfcroloss.pipelines.serving.export import export_model
from tfcroloss.pipelines.training.run_directory import load_run


def export_run(run_dir: str | os.PathLike, model_root: str | os.PathLike, *, version: int | None = None) -> Path:
    """Exports the best weights of a trained run as ``model_root/<version>``; returns its directory."""
    run = load_run(run_dir)
    source = {"run": str(Path(run_dir).resolve()), "data": str(run.config.data.path)}
    return export_model(
        run.model, run.dataset.item_tokens, model_root,
        maxlen=run.config.data.maxlen, source=source, version=version,
    )

"""The house's rules: imports in ``pipelines`` point down the data flow, and choices come from
the registries that own them."""

import ast
import importlib
from pathlib import Path

import pytest

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
PACKAGE = "tfcroloss.pipelines"
# What each room may import, besides itself, the shared modules and the libraries below it
# (tfcroloss, tfcroloss.models): down the flow, never back or sideways.
SHARED = {"files", "provenance"}  # atomic writes; which code and machine made a result
MAY_IMPORT = {
    "files": set(),
    "provenance": set(),
    "data": set(),
    "retrieval": set(),
    "training": {"data", "retrieval"},
    "serving": {"retrieval"},
    # Where a trained run becomes a served version: reads a run directory, writes an export.
    "publish": {"data", "retrieval", "training", "serving"},
    "cli": {"data", "retrieval", "training", "serving", "publish"},
}


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if module.startswith(PACKAGE + ".") and len(parts) > 2 else None


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every ``tfcroloss.pipelines`` module that ``path`` imports, with its line, lazy imports too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.startswith(PACKAGE)]


def _modules() -> list[Path]:
    return sorted(PIPELINES.rglob("*.py"))


def test_every_room_is_known():
    rooms = {path.relative_to(PIPELINES).parts[0].removesuffix(".py") for path in _modules()}
    assert rooms - {"__init__"} == set(MAY_IMPORT)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PIPELINES)))
def test_imports_point_down_the_data_flow(path):
    room = path.relative_to(PIPELINES).parts[0].removesuffix(".py")
    allowed = MAY_IMPORT.get(room, set()) | {room} | SHARED
    wrong = [
        f"line {line}: {name}"
        for line, name in _imports(path)
        if _room(name) is not None and _room(name) not in allowed
    ]
    assert not wrong, f"{path.relative_to(PIPELINES)} ({room}) imports from a later phase: {wrong}"


def test_a_backward_import_is_caught(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from tfcroloss.pipelines.training.train import train\n")
    assert _imports(bad) == [
        (2, "tfcroloss.pipelines.training.train"),
        (2, "tfcroloss.pipelines.training.train.train"),
    ]
    assert _room("tfcroloss.pipelines.training.train") not in MAY_IMPORT["serving"] | {"serving"} | SHARED


def test_config_choices_are_the_registries_names():
    from tfcroloss.pipelines.training import config as config_lib

    sections = [config_lib.DataConfig, config_lib.ModelConfig, config_lib.LossConfig,
                config_lib.NegativesConfig, config_lib.TrainingConfig, config_lib.EvaluationConfig]
    seen = {}
    for section in sections:
        for key, registry in section.CHOICES.items():
            owner = getattr(importlib.import_module(registry.module), registry.attribute)
            assert registry.names() == tuple(owner) and registry.names(), (section.__name__, key)
            seen[f"{section.__name__}.{key}"] = registry.names()
    assert seen["ModelConfig.tower"] == ("mean", "gru")
    assert "softmax" in seen["LossConfig.name"] and "exact" in seen["EvaluationConfig.index"]

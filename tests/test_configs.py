"""Every shipped config is valid."""

from pathlib import Path

import pytest

from tfcroloss.pipelines.training import config as config_lib
from tfcroloss.pipelines.training import experiment_spec

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("experiment")),
                         ids=lambda p: p.name)
def test_run_config_is_valid(path):
    config_lib.load(path)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("experiment*.yaml")), ids=lambda p: p.name)
def test_experiment_config_is_valid(path, monkeypatch):
    monkeypatch.chdir(CONFIGS.parent)
    spec = experiment_spec.load(path)
    assert spec.variants and spec.seeds

"""Serving fixtures: each test module gets its own exported version of the tiny run, with a ScaNN
index (modules add versions and rebuild indexes, so they do not share one)."""

import pytest

from tfcroloss.pipelines.cli.serving import export_run
from tfcroloss.pipelines.serving.index import build_version_index


@pytest.fixture(scope="module")
def version_dir(tiny_run, tmp_path_factory):
    path = export_run(tiny_run, tmp_path_factory.mktemp("serving") / "tiny")
    build_version_index(path, k=20, sample_queries=50)
    return path

"""benchmarks/probe_http_faults.py: bad requests get 4xx, never 5xx; version copies, removals and a
killed index process are answered as TF Serving would (quick mode, the tiny run's export)."""

import json

import pytest

from tfcroloss.pipelines.publish import export_run


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    return export_run(tiny_run, tmp_path_factory.mktemp("probe") / "tiny")


def test_quick_probe_finds_no_5xx_to_client_input_and_nothing_wrong(exported, capsys):
    from benchmarks import probe_http_faults

    status = probe_http_faults.main(["--quick", "--model", str(exported)])
    out = capsys.readouterr().out
    summary = json.loads(out.splitlines()[-1])
    assert summary["client_input_5xx"] == 0 and summary["wrong"] == 0, summary["wrong_cases"]
    assert summary["client_input"] >= 20 and summary["answers_4xx"] >= summary["client_input"] - 2
    assert summary["tried"] > summary["client_input"] + 40  # the version and index-process cases ran
    assert status == 0, out

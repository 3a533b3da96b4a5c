"""benchmarks/probe_cli_inputs.py: bad input to every command ends in one line, never a traceback."""

import json


def test_quick_probe_finds_no_traceback(capsys):
    from benchmarks import probe_cli_inputs

    status = probe_cli_inputs.main(["--quick"])
    out = capsys.readouterr().out
    summary = json.loads(out.splitlines()[-1])
    assert summary["tracebacks"] == 0, summary["traceback_cases"]
    assert not summary["accepted"] and not summary["left_run_dir"], summary
    assert summary["tried"] >= 20 and summary["one_line_errors"] + summary["usage_errors"] == summary["tried"]
    assert status == 0, out

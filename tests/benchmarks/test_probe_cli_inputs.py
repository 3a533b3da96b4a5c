"""benchmarks/probe_cli_inputs.py: bad input to every command ends in one line, never a traceback."""

import json


def test_quick_probe_finds_no_traceback(capsys):
    from benchmarks import probe_cli_inputs

    status = probe_cli_inputs.main(["--quick"])
    out = capsys.readouterr().out
    *cases, summary = (json.loads(line) for line in out.splitlines())
    assert summary["tracebacks"] == 0, summary["traceback_cases"]
    assert not summary["accepted"] and not summary["left_run_dir"], summary
    assert summary["tried"] >= 20 and summary["one_line_errors"] + summary["usage_errors"] == summary["tried"]
    assert status == 0, out
    outcomes = {(case["command"], case["case"]): (case["outcome"], case["message"]) for case in cases}
    # values that could only diverge or degenerate are refused when the config loads
    for name, key in [("learning rate infinite", "training.learning_rate"),
                      ("temperature infinite", "model.temperature_scale"), ("hidden 0", "model.hidden_dims")]:
        outcome, message = outcomes[("train", f"--set {name}")]
        assert outcome == "one_line" and key in message, message
    outcome, message = outcomes[("serve", "port in use")]
    assert outcome == "one_line" and "Address already in use" in message, message

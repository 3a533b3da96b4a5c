"""Run configs are checked whole when they are loaded: keys, loss arguments, types and ranges."""

import pytest

from tfcroloss.pipelines.training import config as config_lib

BASE = {"data": {"path": "data/prepared"}, "loss": {"name": "croloss", "alpha": 1.0}}


def load(tmp_path, text, overrides=None):
    path = tmp_path / "c.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return config_lib.load(path, overrides)


def with_section(section, values):
    return {**BASE, section: {**BASE.get(section, {}), **values}}


@pytest.mark.parametrize(
    "section,values,match",
    [
        ("loss", {"alpah": 1.2}, r"section loss: unknown key 'alpah' \(did you mean 'alpha'\?\); "
                                  r"valid keys of loss 'croloss': name, alpha, kernel, margin, weighting"),
        ("loss", {"kernal": "sigmoid"}, r"unknown key 'kernal' \(did you mean 'kernel'\?\)"),
        ("loss", {"name": "lambda_croloss", "kernel": "softplus"}, r"valid keys of loss 'lambda_croloss': .*grad_kernel"),
        ("loss", {"name": "bpr"}, r"loss 'bpr' fixes alpha; use 'croloss' to set it"),
        ("loss", {"name": "tfrs_softmax", "alpha": 1.0}, r"valid keys of loss 'tfrs_softmax': name$"),
        ("loss", {"name": "crolos"}, r"loss.name: unknown loss 'crolos' \(did you mean 'croloss'\?\)"),
        ("loss", {"num_items": 10}, r"loss.num_items is set from the data set"),
        ("loss", {"alpha": "big"}, r"loss.alpha: expected float, got 'big'"),
        ("loss", {"alpha": -1}, r"loss \(croloss\): alpha must be a number >= 0"),
        ("loss", {"kernel": "sigmoidd"}, r"unknown kernel 'sigmoidd' \(did you mean 'sigmoid'\?\)"),
        ("model", {"embeding_dim": 8}, r"section model: unknown key 'embeding_dim' \(did you mean 'embedding_dim'\?\)"),
        ("model", {"embedding_dim": 0}, r"model.embedding_dim must be >= 1, got 0"),
        ("model", {"hidden_dims": [16, 0]}, r"model.hidden_dims must be >= 1, got 0"),
        ("model", {"hidden_dims": 16}, r"model.hidden_dims: expected a list, got 16"),
        ("model", {"temperature_scale": 0}, r"model.temperature_scale must be > 0, got 0.0"),
        ("training", {"patience": -1}, r"training.patience must be >= 1, got -1"),
        ("training", {"patience": 0}, r"training.patience must be >= 1, got 0"),
        ("training", {"seed": -3}, r"training.seed must be >= 0, got -3"),
        ("training", {"seed": 2**40}, r"training.seed must be >= 0 and <= 2,147,483,647"),
        ("training", {"seed": 1.5}, r"training.seed: expected int, got 1.5"),
        ("training", {"learning_rate": float("nan")}, r"training.learning_rate: expected a finite float"),
        ("training", {"strategy": "mirror"}, r"unknown strategy 'mirror' \(did you mean 'mirrored'\?\)"),
        ("negatives", {"per_positive": 0}, r"negatives.per_positive must be >= 1, got 0"),
        ("evaluation", {"validation_users": -5}, r"evaluation.validation_users must be >= 1, got -5"),
        ("evaluation", {"ns": [0, 10], "select_on": "recall@10"}, r"evaluation.ns must be >= 1, got 0"),
        ("evaluation", {"exclude_history": "yes"}, r"evaluation.exclude_history: expected bool"),
    ],
)
def test_every_section_is_checked_at_load(section, values, match):
    with pytest.raises(config_lib.ConfigError, match=match):
        config_lib.from_dict(with_section(section, values), source="c.yaml")


def test_valid_values_pass():
    config = config_lib.from_dict(
        {**with_section("evaluation", {"validation_users": None}),
         "loss": {"name": "lambda_croloss", "alpha": 2, "weight_kernel": "unit_step", "grad_kernel": "exp"}}
    )
    assert config.loss.params == {"alpha": 2.0, "weight_kernel": "unit_step", "grad_kernel": "exp"}


@pytest.mark.parametrize(
    "text,overrides,match",
    [
        ("data: {path: d}\nloss: {name: croloss}\n", {"loss.alpah": 1.2},
         r"c.yaml, --set loss.alpah: section loss: unknown key 'alpah' \(did you mean 'alpha'\?\); valid keys"),
        ("data: {path: d}\n", {"loss.num_items": "abc"}, r"--set loss.num_items: loss.num_items is set from the data set"),
        ("data: {path: d}\nevaluation: 5\n", {"evaluation.ns": [10]},
         r"c.yaml: section evaluation must be a mapping of keys to values, got 5"),
        ("data: {path: d}\n", {"trainig.seed": 2}, r"--set trainig.seed: unknown section 'trainig' \(did you mean 'training'\?\)"),
        ("data: {path: d}\n", {"training": 2}, r"--set training: expected section.key"),
        ("data: {path: d}\n", {"training.patience": -1}, r"training.patience must be >= 1, got -1"),
        ("data: {path: d}\ntrainig: {seed: 1}\n", None, r"c.yaml: unknown section 'trainig' \(did you mean 'training'\?\)"),
        ("- data\n", None, r"c.yaml: the top level must be a mapping"),
        ("data: {path: d\n", None, r"c.yaml: not valid YAML at line 2, column 1: expected ',' or '}'"),
        (b"data: {path: \xff}\n", None, r"c.yaml: not UTF-8 text \(byte 13\)"),
        ("", None, r"data.path is required"),
    ],
)
def test_file_and_overrides_errors_are_one_line(tmp_path, text, overrides, match):
    with pytest.raises(config_lib.ConfigError, match=match) as caught:
        load(tmp_path, text, overrides)
    assert "\n" not in str(caught.value)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found: .*nothing.yaml"):
        config_lib.load(tmp_path / "nothing.yaml")


def test_loading_and_the_training_commands_import_no_framework():
    import subprocess
    import sys

    code = ("import argparse, sys; from tfcroloss.pipelines.training import config; "
            "from tfcroloss.pipelines.cli import training; "
            "training.register(argparse.ArgumentParser().add_subparsers()); "
            "config.from_dict({'data': {'path': 'd'}, 'loss': {'name': 'croloss', 'kernel': 'sigmoid'}, "
            "'training': {'strategy': 'mirrored'}}); "
            "print([m for m in ('tensorflow', 'tensorflow_recommenders', 'scann') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("training.learning_rate", ".inf", r"training.learning_rate: expected a finite float, got inf"),
        ("training.learning_rate", "1e30", r"training.learning_rate must be > 0 and <= 2,147,483,647"),
        ("model.temperature_scale", ".inf", r"model.temperature_scale: expected a finite float, got inf"),
        ("model.temperature_scale", "-.inf", r"model.temperature_scale: expected a finite float, got -inf"),
        ("model.hidden_dims", "[0]", r"model.hidden_dims must be >= 1, got 0"),
        ("loss.alpha", ".inf", r"loss.alpha: expected a finite float, got inf"),
    ],
)
def test_values_that_can_only_diverge_or_degenerate_are_refused_from_the_command_line(tmp_path, key, value, match):
    from tfcroloss.pipelines.cli.training import _overrides

    with pytest.raises(config_lib.ConfigError, match=match):
        load(tmp_path, "data: {path: d}\n", _overrides([f"{key}={value}"]))


def test_exponent_notation_is_a_number(tmp_path):
    from tfcroloss.pipelines.cli.training import _overrides

    config = load(tmp_path, "data: {path: d}\nmodel: {temperature_scale: 2e1}\n", _overrides(["training.learning_rate=1e-3"]))
    assert (config.training.learning_rate, config.model.temperature_scale) == (0.001, 20.0)

"""Training: fit, validate on Recall@N, keep the best weights, checkpoint, resume.

It writes a run directory (layout in ``run_directory``), and nothing before the config, the data
set and the model are known to be good. Running the same command again on a run directory resumes
from its last checkpoint (also after SIGKILL); batches and negatives are functions of (seed,
step), so a resumed run continues exactly where the checkpoint left it. A run directory that
kept nothing trained takes any config (a corrected command is never refused). A step loss or a
validation metric that is NaN or infinite stops the run (``TrainingDiverged``, one line naming
the step) with its last checkpoint kept and no ``metrics.json`` written; resumed with
``training.max_steps`` set to that checkpoint's step, the run finishes there.

``training.strategy`` picks a ``tf.distribute`` strategy (see ``distribute``). Under
``multi_worker`` every worker runs ``train`` and computes the same validations (so all stop
together), but only the chief writes the run directory; the others write to scratch
directories removed at the end, and resume from the chief's checkpoints (a file system all
workers share). Under ``parameter_server`` the chief trains; worker and ps tasks only serve.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from tfcroloss.models.optimizers import SparseAdam, build_optimizer
from tfcroloss.models.two_tower import negatives_per_row
from tfcroloss.pipelines.data.dataset import DataError, PreparedDataset
from tfcroloss.pipelines.data.inputs import (
    EvalSamples,
    check_batches,
    evaluation_samples,
    training_dataset,
)
from tfcroloss.pipelines.files import atomic_write_text, remove_stale_temporaries
from tfcroloss.pipelines.training import config as config_lib
from tfcroloss.pipelines.training import distribute
from tfcroloss.pipelines.training.evaluate import evaluate
from tfcroloss.pipelines.training.run_directory import (
    BEST_DIR,
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    LOGS_DIR,
    METRICS_FILE,
    VALIDATION_FILE,
    Run,
    build_model,
    holds_training,
    weights_checkpoint,
    with_resolved_data,
)


def _validation_samples(config: config_lib.RunConfig, dataset: PreparedDataset) -> EvalSamples:
    samples = evaluation_samples(dataset.valid, maxlen=config.data.maxlen)
    limit = config.evaluation.validation_users
    if limit is None or limit >= samples.num_users:
        return samples
    end = samples.target_offsets[limit]
    return EvalSamples(
        history=samples.history[:limit],
        target_offsets=samples.target_offsets[: limit + 1],
        targets=samples.targets[:end],
        user_index=samples.user_index[:limit],
    )


def _fetched(value: Any) -> Any:
    """A step's logs: tensors, or under ``parameter_server`` a ``RemoteValue`` of them, fetched."""
    return value.fetch() if isinstance(value, tf.distribute.experimental.coordinator.RemoteValue) else value


class TrainingDiverged(ValueError):
    """The loss or a validation metric became NaN or infinite: the run stops, keeping its last
    checkpoint (taken at a validation where everything was finite) and writing no test metrics."""


class _Validation(tf.keras.callbacks.Callback):
    """Validates every epoch (= eval_every steps), keeps the best weights, checkpoints, stops early.

    It stops the run (``TrainingDiverged``) before checkpointing when a step's loss or a
    validation metric is not finite. The steps' logs are kept as they come (tensors) and read at
    the validation, so that checking them does not wait for every step."""

    def __init__(self, run: Run, state: tf.train.Checkpoint, latest, best, samples: EvalSamples):
        super().__init__()
        self._supports_tf_logs = True  # batch logs stay tensors (no host copy per step)
        self.run, self.state, self.latest, self.best, self.samples = run, state, latest, best, samples
        self.writer = tf.summary.create_file_writer(str(run.directory / LOGS_DIR / "validation"))
        self.select_on = run.config.evaluation.select_on
        self.step_logs: list[Any] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.step_logs = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.step_logs.append(logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        config = self.run.config
        step = int(self.run.model.optimizer.iterations.numpy())
        losses = np.array([float(_fetched(logs)["loss"]) for logs in self.step_logs])
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            self._diverged(f"the training loss was {losses[bad[0]]} at step {step - len(losses) + bad[0] + 1}")
        started = time.perf_counter()
        if isinstance(self.run.model.optimizer, SparseAdam):  # the weights saved below: every row up to date
            self.run.model.optimizer.catch_up()
        metrics = evaluate(  # the configured back-end; its agreement is checked on the test split
            self.run.model,
            self.samples,
            ns=config.evaluation.ns,
            index=config.evaluation.index,
            exclude_history=config.evaluation.exclude_history,
            agreement_users=0,
        )
        for key in (k for k in metrics if "@" in k):
            if not math.isfinite(metrics[key]):
                self._diverged(f"validation {key} was {metrics[key]} at step {step}")
        value = float(metrics[self.select_on])
        improved = value > float(self.state.best_value.numpy())
        if improved:
            self.state.best_value.assign(value)
            self.state.best_step.assign(step)
            self.state.bad_validations.assign(0)
            self.best.save(checkpoint_number=step)
        else:
            self.state.bad_validations.assign_add(1)
        self.latest.save(checkpoint_number=step)
        record = {"step": step, "loss": (logs or {}).get("loss"), **metrics, "seconds": time.perf_counter() - started}
        with open(self.run.directory / VALIDATION_FILE, "a") as log:
            log.write(json.dumps(record) + "\n")
        with self.writer.as_default(step=step):
            for key in (k for k in metrics if "@" in k):
                tf.summary.scalar(key, metrics[key])
        marker = " (best)" if improved else f" (no gain {int(self.state.bad_validations.numpy())}x)"
        print(f"step {step}: validation {self.select_on} = {value:.4f}{marker}", flush=True)
        if int(self.state.bad_validations.numpy()) >= config.training.patience:
            print(f"early stop: no gain in {config.training.patience} validations", flush=True)
            self.model.stop_training = True

    def _diverged(self, what: str) -> None:
        config = self.run.config
        kept = self.latest.latest_checkpoint
        if kept:
            step = int(kept.rsplit("-", 1)[1])
            keeps = (f"the run keeps its checkpoint of step {step}: --set training.max_steps={step} finishes it "
                     "there (test metrics of its best weights)")
        else:
            keeps = "nothing was kept: a corrected command may reuse the run directory"
        raise TrainingDiverged(
            f"{self.run.directory}: training diverged: {what}; lower training.learning_rate (now "
            f"{config.training.learning_rate:g}) or model.temperature_scale (now {config.model.temperature_scale:g}); "
            f"{keeps}"
        )


def _check_fits_catalog(config: config_lib.RunConfig, dataset: PreparedDataset) -> None:
    """The rank estimator needs at most as many negatives per row as the catalog has items."""
    negatives = negatives_per_row(
        config.negatives.mode, config.training.batch_size, config.negatives.per_positive
    )
    if negatives > dataset.num_items:
        raise config_lib.ConfigError(
            f"{negatives:,} negatives per row (training.batch_size={config.training.batch_size}, "
            f"negatives.mode={config.negatives.mode}, negatives.per_positive={config.negatives.per_positive}) "
            f"exceed the catalog of {dataset.num_items:,} items in {config.data.path}; lower them"
        )


def _checked_inputs(config: config_lib.RunConfig, dataset: PreparedDataset, replicas: int) -> EvalSamples:
    """Checks that ``dataset`` gives this config's training batches and validation users; returns
    the validation samples."""
    _check_fits_catalog(config, dataset)
    per_replica = max(1, config.training.batch_size // replicas)
    check_batches(dataset.train, batch_size=per_replica, scheme=config.data.scheme)
    samples = _validation_samples(config, dataset)
    if samples.num_users == 0:
        raise DataError(f"{config.data.path}: no user of the valid split has a history and a target to validate on")
    return samples


def _prepare_run_directory(config: config_lib.RunConfig, run_dir: Path) -> None:
    """Writes ``config.yaml``: a new run, the same run resumed, or the replacement of a run that
    kept nothing trained (its logs go with it); another run's folder is refused."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for folder in (CHECKPOINTS_DIR, BEST_DIR):  # what a killed save left: TensorFlow's ckpt-N_temp/
        remove_stale_temporaries(run_dir / folder, extra=r"ckpt-\d+_temp")
    saved = run_dir / CONFIG_FILE
    if saved.exists() and not holds_training(run_dir):
        shutil.rmtree(run_dir / LOGS_DIR, ignore_errors=True)
        (run_dir / VALIDATION_FILE).unlink(missing_ok=True)
    elif saved.exists():
        # A resumed run may only be given more (or fewer) steps; anything else is another run.
        previous = with_resolved_data(config_lib.load(saved)).to_dict()
        wanted = config.to_dict()
        previous["training"]["max_steps"] = wanted["training"]["max_steps"]
        if previous != wanted:
            raise config_lib.ConfigError(
                f"{run_dir} already holds a run with a different config ({saved}); "
                "choose another run directory, or resume with the same config (only training.max_steps may change)"
            )
    atomic_write_text(saved, config.to_yaml())


def _optimizer_name(config: config_lib.RunConfig, strategy: tf.distribute.Strategy) -> str:
    """``training.optimizer``, except ``adam`` under ``parameter_server``: its per-row catch-up
    needs the table whole on one device, so the sharded table takes tf-keras's dense Adam (the
    same results at the dense update's cost), as one line says."""
    name = config.training.optimizer
    if name == "adam" and isinstance(strategy, tf.distribute.ParameterServerStrategy):
        print("training.optimizer adam: the parameter_server strategy shards the item table, so training "
              "uses dense_adam (tf-keras Adam: the same updates, over every row at every step)", flush=True)
        return "dense_adam"
    return name


def train(
    config: config_lib.RunConfig,
    run_dir: str | Path,
    *,
    verbose: int | None = None,
    callbacks: Sequence[tf.keras.callbacks.Callback] = (),
) -> dict[str, Any]:
    """Trains (or resumes) the run in ``run_dir`` and returns its test metrics.

    ``callbacks`` are extra Keras callbacks for ``fit``. On worker and ps tasks of a
    ``parameter_server`` cluster this serves and never returns.
    """
    distribute.serve_if_server_task(config.training.strategy)
    strategy = distribute.make_strategy(config.training.strategy)  # before any other TF op
    scratch = None if distribute.is_chief(strategy) else tempfile.TemporaryDirectory(prefix="tfcroloss-worker-")
    resume_dir, run_dir = Path(run_dir), Path(run_dir if scratch is None else scratch.name)
    config = with_resolved_data(config)  # recorded so: the run loads from any directory
    dataset = PreparedDataset.load(config.data.path)
    validation_samples = _checked_inputs(config, dataset, strategy.num_replicas_in_sync)
    tf.keras.utils.set_random_seed(config.training.seed)
    with strategy.scope():
        model = build_model(config, dataset)
        model.compile(optimizer=build_optimizer(_optimizer_name(config, strategy), config.training.learning_rate))
    _prepare_run_directory(config, run_dir)  # the first write, once config, data and model are good
    run = Run(run_dir, config, dataset, model)

    state = tf.train.Checkpoint(
        model=model,
        optimizer=model.optimizer,
        best_value=tf.Variable(-1.0, dtype=tf.float64),
        best_step=tf.Variable(0, dtype=tf.int64),
        bad_validations=tf.Variable(0, dtype=tf.int64),
    )
    latest = tf.train.CheckpointManager(state, str(run_dir / CHECKPOINTS_DIR), max_to_keep=1)
    best = tf.train.CheckpointManager(weights_checkpoint(model), str(run_dir / BEST_DIR), max_to_keep=1)
    resume_from = tf.train.latest_checkpoint(str(resume_dir / CHECKPOINTS_DIR))
    if resume_from:
        state.restore(resume_from).expect_partial()
        print(f"resuming {resume_dir} from step {int(model.optimizer.iterations.numpy())}", flush=True)

    training = config.training
    done_steps = int(model.optimizer.iterations.numpy())
    stopped = int(state.bad_validations.numpy()) >= training.patience
    epochs = math.ceil(training.max_steps / training.eval_every)
    if done_steps < training.max_steps and not stopped:

        def batches(input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
            return training_dataset(
                dataset.train,
                batch_size=training.batch_size,
                maxlen=config.data.maxlen,
                seed=training.seed,
                scheme=config.data.scheme,
                input_context=input_context,
                start_step=done_steps,
            )

        callbacks = [
            _Validation(run, state, latest, best, validation_samples),
            tf.keras.callbacks.TensorBoard(str(run_dir / LOGS_DIR), update_freq=max(1, training.eval_every // 10)),
            *callbacks,
        ]
        model.fit(
            distribute.distributed_input(strategy, batches),
            epochs=epochs,
            initial_epoch=done_steps // training.eval_every,
            steps_per_epoch=training.eval_every,
            callbacks=callbacks,
            verbose=(1 if sys.stdout.isatty() else 2) if verbose is None else verbose,
        )
    if not best.latest_checkpoint:
        raise RuntimeError(f"{run_dir}: training ended without a validation; raise training.max_steps")
    steps = int(model.optimizer.iterations.numpy())
    weights_checkpoint(model).restore(best.latest_checkpoint).expect_partial()
    result = _write_test_metrics(run, best_step=int(state.best_step.numpy()), steps=steps)
    if scratch is not None:
        scratch.cleanup()
    return result


def _write_test_metrics(run: Run, best_step: int, steps: int) -> dict[str, Any]:
    """Evaluates the best weights on the test split and writes metrics.json."""
    config = run.config
    samples = evaluation_samples(run.dataset.test, maxlen=config.data.maxlen)
    test = evaluate(
        run.model, samples, ns=config.evaluation.ns, index=config.evaluation.index,
        exclude_history=config.evaluation.exclude_history,
    )
    validations = [json.loads(line) for line in (run.directory / VALIDATION_FILE).read_text().splitlines()]
    chosen = [record for record in validations if record["step"] == best_step]
    result = {
        "test": test,
        "best_step": best_step,
        "validation": {k: v for k, v in chosen[-1].items() if "@" in k} if chosen else None,
        "steps": steps,
        "config": config.to_dict(),
    }
    atomic_write_text(run.directory / METRICS_FILE, json.dumps(result, indent=2) + "\n")
    return result



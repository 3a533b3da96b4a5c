"""Training: a run config in, a trained run directory and its metrics out.

``config`` checks the YAML run config (choices come from the registries); ``train`` fits the
two-tower model with validation, early stopping, checkpoints and exact resume, writing a run
directory whose format is ``run_directory``; ``distribute`` picks the tf.distribute strategy;
``evaluate`` scores every user against the whole catalog with a ``retrieval`` back-end;
``experiment`` runs grids of losses and seeds (the file format in ``experiment_spec``) and
``report`` writes their tables, plots and claims; ``tune`` searches a loss for a target N. Training reads
``data`` and ``retrieval``, and never imports ``serving``.
"""

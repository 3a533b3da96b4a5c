"""tfcroloss pipelines: everything that touches files, processes and services, one room per phase.

Data flows one way, and imports follow it (a test checks this):

- ``data``: raw logs -> prepared data set on disk (readers, preparation, the prepared-data
  format) -> model inputs (tf.data training cuts, evaluation samples); synthetic logs, downloads.
- ``retrieval``: top-k search over a catalog behind one interface (exact, ScaNN).
- ``training``: run config, training with validation/checkpoints/resume, the run-directory
  format, evaluation, experiments. Reads ``data``, searches with ``retrieval``.
- ``serving``: the exported-version format, export to TF Serving, the version's ScaNN index,
  lookups (``Retriever``) and the HTTP service. Reads ``retrieval``; never imports ``training``.
- ``publish``: where training and serving meet: ``export_run`` reads a run directory and writes
  an exported version.
- ``cli``: ``tfcroloss <command>``: parses arguments and calls the phases. Parsing and ``--help``
  import no framework; each command's function imports what it runs.

``files`` (atomic writes) and ``provenance`` (which code and machine made a result) serve every
phase. Where to add things: a log reader in
``data/readers.py``; a retrieval back-end as a module in ``retrieval/`` registered in
``retrieval.INDEX_KINDS``; a loss preset in ``tfcroloss.models.loss_presets.PRESETS``; an HTTP
endpoint in the ``serving`` routes module of its API; a command in the ``cli`` module of its phase.
"""

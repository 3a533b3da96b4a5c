"""Serving: an exported version on disk, its ScaNN index, and lookups from Python, CLI and HTTP.

``version`` is the on-disk format of an exported version (layout, metadata, fingerprint, version
listing); ``export`` writes it from a trained model (a TF Serving SavedModel); ``index`` builds and
checks the version's ScaNN index; ``retriever`` answers lookups (user tower + retrieval index).
Serving reads the export format only: it never imports training.

The HTTP service around a ``Retriever``: ``app`` builds it (``create_app``; ``/health`` and
``/metadata``); ``recommend_routes`` and ``tf_serving_routes`` hold the endpoints (TF Serving's
formats in ``tf_serving``); ``metrics`` the Prometheus metrics and ``/metrics``; ``state`` what the
routes share; ``bodies`` reads and parses request bodies and writes JSON answers; ``batching`` runs
lookups in micro-batches; ``watcher`` swaps in new versions; ``limits`` bounds requests. A new
endpoint goes in the routes module of its API, or a new one included by ``app``.
"""

from tfcroloss.pipelines.retrieval import INDEX_KINDS

INDEX_CHOICES = ("auto", *INDEX_KINDS)
"""What a lookup searches with: "auto" is the version's ScaNN index if built, else exact search."""

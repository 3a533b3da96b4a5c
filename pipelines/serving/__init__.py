"""Serving: an exported version on disk, its ScaNN index, and lookups from Python, CLI and HTTP.

``version`` is the on-disk format of an exported version (layout, metadata, fingerprint, version
listing); ``export`` writes it from a trained model (a TF Serving SavedModel); ``index`` builds and
checks the version's ScaNN index; ``retriever`` answers lookups (user tower + retrieval index);
``http`` is the HTTP service around a ``Retriever``. Serving reads the export format only: it
never imports training. A new HTTP endpoint goes in ``http``.
"""

from tfcroloss.pipelines.retrieval import INDEX_KINDS

INDEX_CHOICES = ("auto", *INDEX_KINDS)
"""What a lookup searches with: "auto" is the version's ScaNN index if built, else exact search."""

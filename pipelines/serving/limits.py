"""What a request to ``tfcroloss serve`` may hold, and how its lookups are batched and queued
(no heavy imports: the CLI reads the defaults for ``--help``)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may hold, and how lookups are batched and queued."""

    max_history: int = 1000
    """item ids per history"""
    max_batch: int = 256
    """histories per request"""
    max_id_length: int = 256
    """characters per item id"""
    max_body_bytes: int = 1 << 20
    """bytes per request body (413 beyond)"""
    max_queue: int = 1024
    """histories waiting for a lookup (503 with Retry-After beyond)"""
    batch_rows: int = 64
    """most histories per user-tower call and search"""
    batch_delay_ms: float = 0.0
    """how long the oldest lookup waits for others to join its batch"""

    def __post_init__(self) -> None:
        counts = {name: getattr(self, name) for name in ("max_history", "max_batch", "max_id_length", "max_body_bytes", "max_queue", "batch_rows")}
        bad = {name: value for name, value in counts.items() if not (isinstance(value, int) and value >= 1)}
        if bad or self.batch_delay_ms < 0:
            raise ValueError(f"limits must be integers >= 1 and batch_delay_ms >= 0, got {bad or {'batch_delay_ms': self.batch_delay_ms}}")
        if self.max_queue < self.max_batch:
            raise ValueError(f"max_queue ({self.max_queue}) must hold at least one full batch request (max_batch {self.max_batch})")

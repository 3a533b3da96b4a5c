"""Synthetic logs by name: their sizes and shape (``synthetic`` writes them). Light to import,
so the CLI can offer the names.
"""

from __future__ import annotations

import dataclasses

from tfcroloss.pipelines.data import DataError


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and shape of a synthetic log (``num_users * mean_length`` interactions, roughly)."""

    num_users: int
    num_items: int
    mean_length: float
    num_clusters: int
    switch_probability: float = 0.15
    noise_probability: float = 0.1
    zipf_exponent: float = 0.9

    def __post_init__(self) -> None:
        if self.num_users < 1 or self.num_items < 1 or self.num_clusters < 1:
            raise DataError(
                "num_users, num_items and num_clusters must be >= 1, got "
                f"{self.num_users}, {self.num_items}, {self.num_clusters}"
            )
        if self.mean_length <= 3:
            raise DataError(f"mean_length must be > 3, got {self.mean_length}")


PRESETS = {
    "tiny": SyntheticConfig(num_users=200, num_items=300, mean_length=12, num_clusters=10),
    "demo": SyntheticConfig(num_users=6_000, num_items=5_000, mean_length=25, num_clusters=60),
    # Sizes of the paper's data sets (ComiRec's Amazon Books and Taobao after filtering).
    "amazon": SyntheticConfig(
        num_users=603_668, num_items=367_982, mean_length=14.8, num_clusters=2_000
    ),
    "taobao": SyntheticConfig(
        num_users=976_779, num_items=1_708_530, mean_length=87.4, num_clusters=5_000
    ),
}

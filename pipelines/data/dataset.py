"""The prepared data set: the on-disk contract between data preparation and training.

Layout of a prepared data set directory (``FORMAT_VERSION`` 2)::

    metadata.json            counts, settings, the split rule and sources (``PreparedDataset.metadata``)
    items.parquet            one row per item id 0..num_items: ``token`` (string), ``count`` (int64,
                             training interactions); row 0 is the padding id with token ""
    users.parquet            one row per kept user: ``token`` (string); a user's index is its row
    {train,valid,test}/      the split's users in user-index order, as Parquet shards of
                             ``users_per_shard`` users (``shards``) and their ``shards.json``

Version 1 (still read) kept each split as ``user_index.npy`` (int64 [U]), ``offsets.npy`` (int64
[U+1]: user j owns items[offsets[j]:offsets[j+1]]) and ``items.npy`` (int32 [T]), and split users
by a NumPy shuffle (``split_rule`` absent from its metadata); version 2 splits by ``SPLIT_RULE``.

The directory is written under a temporary name in the same parent and renamed into place, so a
reader never sees a half-written data set.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tfcroloss.pipelines.data import SPLIT_NAMES, DataError
from tfcroloss.pipelines.data import shards as shards_lib
from tfcroloss.pipelines.files import atomic_directory

FORMAT_VERSION = 2
METADATA_FILE = "metadata.json"


@dataclasses.dataclass(frozen=True)
class Split:
    """The users of one split and their time-ordered item sequences (CSR layout); ``shards``
    are the files it was read from (format 2), which training streams."""

    user_index: np.ndarray
    offsets: np.ndarray
    items: np.ndarray
    shards: tuple[shards_lib.Shard, ...] = ()

    def __post_init__(self) -> None:
        if self.offsets.shape != (self.user_index.shape[0] + 1,):
            raise DataError(
                f"split offsets must have {self.user_index.shape[0] + 1} entries "
                f"(users + 1), got shape {self.offsets.shape}"
            )
        if int(self.offsets[0]) != 0 or int(self.offsets[-1]) != self.items.shape[0]:
            raise DataError(
                f"split offsets must run from 0 to {self.items.shape[0]} (number of items), "
                f"got {int(self.offsets[0])}..{int(self.offsets[-1])}"
            )

    @property
    def num_users(self) -> int:
        return int(self.user_index.shape[0])

    @property
    def num_interactions(self) -> int:
        return int(self.items.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        """int64 [U]: number of items of each user."""
        return np.diff(self.offsets)

    def sequence(self, i: int) -> np.ndarray:
        """The time-ordered item ids of the split's ``i``-th user."""
        return self.items[self.offsets[i] : self.offsets[i + 1]]

    def save(self, directory: Path, *, users_per_shard: int) -> None:
        shards_lib.write_split(directory, self.user_index, self.offsets, self.items, users_per_shard)

    @classmethod
    def load(cls, directory: Path) -> Split:
        shards = shards_lib.read_index(directory)
        return cls(*shards_lib.read_split(shards), shards=shards)

    @classmethod
    def load_version_1(cls, directory: Path) -> Split:
        arrays = {}
        for name, dtype in (("user_index", np.int64), ("offsets", np.int64), ("items", np.int32)):
            array = np.load(directory / f"{name}.npy", allow_pickle=False)
            if array.dtype != dtype or array.ndim != 1:
                raise DataError(
                    f"{directory / name}.npy: expected a 1-D {np.dtype(dtype).name} array, "
                    f"got {array.ndim}-D {array.dtype}"
                )
            arrays[name] = array
        return cls(**arrays)


class PreparedDataset:
    """Vocabularies, popularity and the train/valid/test splits of one prepared data set.

    Item id 0 is padding; real items have ids 1..``num_items`` in descending popularity.
    ``item_tokens`` and ``user_tokens`` are read on first use, so training never pays for them.
    """

    def __init__(
        self,
        *,
        metadata: dict[str, Any],
        item_counts: np.ndarray,
        train: Split,
        valid: Split,
        test: Split,
        item_tokens: pa.Array | None = None,
        user_tokens: pa.Array | None = None,
        path: Path | None = None,
    ) -> None:
        self.metadata = metadata
        self.item_counts = item_counts
        self.train, self.valid, self.test = train, valid, test
        self.path = path
        self._item_tokens_arrow = item_tokens
        self._user_tokens_arrow = user_tokens

    @property
    def num_items(self) -> int:
        return int(self.metadata["num_items"])

    @property
    def num_users(self) -> int:
        return int(self.metadata["num_users"])

    @property
    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "valid": self.valid, "test": self.test}

    @functools.cached_property
    def item_tokens(self) -> np.ndarray:
        """object [num_items + 1]: raw item token of each id; ``item_tokens[0] == ""``."""
        return self._tokens("items", self._item_tokens_arrow)

    @functools.cached_property
    def user_tokens(self) -> np.ndarray:
        """object [num_users]: raw user token of each user index."""
        return self._tokens("users", self._user_tokens_arrow)

    def _tokens(self, name: str, array: pa.Array | None) -> np.ndarray:
        if array is None:
            array = pq.read_table(self.path / f"{name}.parquet", columns=["token"])["token"]
        return np.asarray(array.to_numpy(zero_copy_only=False), dtype=object)

    def item_id_lookup(self) -> dict[str, int]:
        """Raw item token -> item id (1..num_items), for serving raw ids."""
        return {token: item_id for item_id, token in enumerate(self.item_tokens) if item_id}

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the data set to ``path`` atomically (temporary sibling directory, then rename),
        in the current format, its splits in shards of the metadata's ``users_per_shard`` users."""
        path = Path(path)
        users_per_shard = int(self.metadata.get("users_per_shard", shards_lib.DEFAULT_USERS_PER_SHARD))
        self.metadata = {**self.metadata, "format_version": FORMAT_VERSION, "users_per_shard": users_per_shard}
        with atomic_directory(path, overwrite=overwrite) as tmp:
            write_items(tmp, self._arrow_tokens("items", self._item_tokens_arrow), self.item_counts)
            write_users(tmp, self._arrow_tokens("users", self._user_tokens_arrow))
            for name, split in self.splits.items():
                split.save(tmp / name, users_per_shard=users_per_shard)
            write_metadata(tmp, self.metadata)
        self.path = path
        return path

    def _arrow_tokens(self, name: str, array: pa.Array | None) -> pa.Array:
        if array is not None:
            return array
        if self.path is not None:
            return pq.read_table(self.path / f"{name}.parquet", columns=["token"])["token"]
        return pa.array(getattr(self, f"{name[:-1]}_tokens").tolist(), pa.string())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PreparedDataset:
        """Read a prepared data set written by ``save`` (no raw log is parsed)."""
        path = Path(path)
        metadata = read_metadata(path)
        item_counts = pq.read_table(path / "items.parquet", columns=["count"])["count"].to_numpy()
        if item_counts.shape[0] != metadata["num_items"] + 1:
            raise DataError(
                f"{path / 'items.parquet'}: expected {metadata['num_items'] + 1} rows "
                f"(num_items + padding), got {item_counts.shape[0]}"
            )
        load_split = Split.load if metadata["format_version"] >= 2 else Split.load_version_1
        splits = {name: load_split(path / name) for name in SPLIT_NAMES}
        for name, split in splits.items():
            if (
                split.items.size
                and not 1 <= split.items.min() <= split.items.max() <= len(item_counts) - 1
            ):
                raise DataError(
                    f"{path / name}: item ids must be in 1..{len(item_counts) - 1}"
                )
        return cls(metadata=metadata, item_counts=item_counts, path=path, **splits)


def write_items(directory: Path, tokens: pa.Array | pa.ChunkedArray, counts: np.ndarray) -> None:
    """``items.parquet``: the token and training count of each item id (row 0: padding)."""
    table = pa.table({"token": tokens.cast(pa.string()), "count": pa.array(counts, pa.int64())})
    pq.write_table(table.combine_chunks(), directory / "items.parquet")


def write_users(directory: Path, tokens: pa.Array | pa.ChunkedArray) -> None:
    """``users.parquet``: the token of each user index."""
    pq.write_table(pa.table({"token": tokens.cast(pa.string())}).combine_chunks(), directory / "users.parquet")


def write_metadata(directory: Path, metadata: dict[str, Any]) -> None:
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a prepared data set, checked for a readable ``format_version``."""
    path = Path(path)
    metadata_path = path / METADATA_FILE
    if not metadata_path.is_file():
        raise DataError(
            f"{path} is not a prepared data set (no {METADATA_FILE}); "
            "create one with `tfcroloss prepare`"
        )
    try:
        metadata = json.loads(metadata_path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{metadata_path}: invalid JSON: {error}") from None
    version = metadata.get("format_version") if isinstance(metadata, dict) else None
    if not isinstance(version, int):
        raise DataError(f"{metadata_path}: field 'format_version' is missing or not an integer")
    if version > FORMAT_VERSION:
        raise DataError(
            f"{metadata_path}: format_version {version} is newer than this tfcroloss reads "
            f"(<= {FORMAT_VERSION}); upgrade tfcroloss"
        )
    return metadata



"""Data preparation with the ComiRec protocol: interaction log -> ``PreparedDataset``.

Steps, each configurable by ``PrepareConfig`` (defaults as in the paper):
1. keep interactions with ``rating >= min_rating`` (when set); every kept one is a positive;
2. sort each user's interactions by timestamp, stably (ties keep the order of the log);
3. drop repeated (user, item, timestamp) rows, keeping the first;
4. drop users with fewer than ``min_user_count`` and items with fewer than ``min_item_count``
   interactions, both counted on the same data (ComiRec's single pass), or repeated until nothing
   changes (``iterative_filter``);
5. give items ids 1..n by descending popularity, ties by first appearance in the log (0 = padding);
6. split users 80/10/10 into train/valid/test by ``SPLIT_RULE``, a hash of ``seed`` (1230, the
   authors') and the user's token, which any engine computes user by user; input that is already
   split (ComiRec ``*_train/_valid/_test.txt``) keeps its split.

Everything is vectorised numpy on int32 codes, so an 85M-row log needs a few GB and no Python
loop per row.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tfcroloss.pipelines.data.dataset import (
    FORMAT_VERSION,
    SPLIT_NAMES,
    DataError,
    PreparedDataset,
    Split,
)
from tfcroloss.pipelines.data.readers import InteractionLog, read_log
from tfcroloss.pipelines.data.shards import DEFAULT_USERS_PER_SHARD
from tfcroloss.pipelines.files import check_writable

AUTHORS_SEED = 1230
DEFAULT_MIN_COUNT = 5
SPLIT_RULE = (
    "users ordered by (int(md5(f'{seed}:{token}').hexdigest()[:15], 16), user index); the first "
    "int(train_fraction * users) are train, the next up to int((train_fraction + valid_fraction) "
    "* users) valid, the rest test"
)
"""How a raw log's users are split (``metadata.json: split_rule``, from format version 2)."""


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """Settings of the preparation; ``None`` min counts mean the protocol default: 5 for a raw
    log, 0 for input that is already filtered and split (ComiRec split files)."""

    min_user_count: int | None = None
    min_item_count: int | None = None
    iterative_filter: bool = False
    min_rating: float | None = None
    drop_duplicates: bool = True
    train_fraction: float = 0.8
    valid_fraction: float = 0.1
    seed: int = AUTHORS_SEED
    min_cut: int = 4
    users_per_shard: int = DEFAULT_USERS_PER_SHARD

    def __post_init__(self) -> None:
        for name in ("min_user_count", "min_item_count"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise DataError(f"{name} must be >= 0, got {value}")
        if not (0 < self.train_fraction and 0 <= self.valid_fraction):
            raise DataError(
                f"train_fraction must be > 0 and valid_fraction >= 0, "
                f"got {self.train_fraction} and {self.valid_fraction}"
            )
        if self.train_fraction + self.valid_fraction > 1:
            raise DataError(
                f"train_fraction + valid_fraction must be <= 1, "
                f"got {self.train_fraction} + {self.valid_fraction}"
            )
        if self.min_cut < 1:
            raise DataError(f"min_cut must be >= 1, got {self.min_cut}")
        if self.users_per_shard < 1:
            raise DataError(f"users_per_shard must be >= 1, got {self.users_per_shard}")

    def min_counts(self, presplit: bool) -> tuple[int, int]:
        """The minimum user and item counts, the protocol's defaults filled in."""
        default = 0 if presplit else DEFAULT_MIN_COUNT
        return (
            default if self.min_user_count is None else self.min_user_count,
            default if self.min_item_count is None else self.min_item_count,
        )

    def split_sizes(self, num_users: int) -> tuple[int, int]:
        """How many of ``num_users`` users go to train and to valid under ``SPLIT_RULE``."""
        num_train = int(self.train_fraction * num_users)
        return num_train, int((self.train_fraction + self.valid_fraction) * num_users) - num_train


def prepare_file(
    fmt: str,
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    config: PrepareConfig | None = None,
    overwrite: bool = False,
    **reader_options: Any,
) -> PreparedDataset:
    """Read ``input_path`` (format ``fmt``), prepare it and save it atomically to ``output``.

    Whether ``output`` can be written is checked first, before any work."""
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists; choose another --output or --overwrite")
    check_writable(output)
    log = read_log(fmt, input_path, **reader_options)
    settings = {"format": fmt, **reader_options}
    dataset = prepare(log, config or PrepareConfig(), reader_settings=settings)
    dataset.save(output, overwrite=overwrite)
    return dataset


def prepare(
    log: InteractionLog,
    config: PrepareConfig,
    *,
    reader_settings: dict[str, Any] | None = None,
) -> PreparedDataset:
    """Apply the ComiRec protocol to ``log`` and return the (unsaved) prepared data set."""
    presplit = log.split is not None
    min_user, min_item = config.min_counts(presplit)
    dropped: dict[str, int] = {}

    rows = _Rows(log.users, log.items, log.timestamps, log.split)
    if config.min_rating is not None:
        rows, dropped["below_min_rating"] = rows.keep(_rating_mask(log, config.min_rating))
    if not _is_time_ordered(rows.users, rows.times):
        rows = rows.take(np.lexsort((rows.times, rows.users)))  # stable: ties keep the log's order
    keep = _first_of_duplicates(rows.users, rows.items, rows.times) if config.drop_duplicates else None
    rows = dataclasses.replace(rows, times=None)  # not needed past this point: free it
    rows, dropped["duplicates"] = rows.keep(keep)
    keep = _frequency_filter(
        rows.users, rows.items, len(log.user_tokens), len(log.item_tokens), min_user, min_item,
        iterative=config.iterative_filter,
    )
    rows, dropped["filtered_interactions"] = rows.keep(keep)
    del keep
    if rows.users.size == 0:
        raise no_user_left(log.num_interactions, log.sources, config, presplit)

    by_popularity = _codes_by_popularity(rows.items, len(log.item_tokens))
    item_id_of_code = np.zeros(len(log.item_tokens), np.int32)
    item_id_of_code[by_popularity] = np.arange(1, by_popularity.size + 1, dtype=np.int32)
    users = _UserSplit.of(rows, config, log)
    rows = dataclasses.replace(rows, users=None, split=None)  # freed before the items are mapped
    items = item_id_of_code[rows.items]
    del rows
    splits = users.splits(items, config)
    kept_user_codes = users.kept_codes

    num_items = int(by_popularity.size)
    return PreparedDataset(
        metadata=metadata(
            read={"interactions": log.num_interactions, "users": len(log.user_tokens), "items": len(log.item_tokens)},
            splits={name: (split.num_users, split.num_interactions) for name, split in splits.items()},
            num_items=num_items,
            num_users=int(kept_user_codes.size),
            dropped=dropped,
            train_users_without_cut=int(np.count_nonzero(splits["train"].lengths < config.min_cut + 1)),
            settings=settings(config, reader_settings, presplit),
            sources=log.sources,
        ),
        item_counts=np.bincount(splits["train"].items, minlength=num_items + 1).astype(np.int64),
        item_tokens=pa.concat_arrays(
            [pa.array([""], pa.string()), log.item_tokens.take(pa.array(by_popularity))]
        ),
        user_tokens=log.user_tokens.take(pa.array(kept_user_codes)),
        **splits,
    )


@dataclasses.dataclass(frozen=True)
class _Rows:
    """The interactions being prepared, as parallel arrays (``split`` only for pre-split input)."""

    users: np.ndarray | None
    items: np.ndarray
    times: np.ndarray | None
    split: np.ndarray | None

    def take(self, rows: np.ndarray) -> _Rows:
        """The rows selected by an index array or a boolean mask, in its order."""
        return _Rows(*(None if array is None else array[rows] for array in dataclasses.astuple(self)))

    def keep(self, mask: np.ndarray | None) -> tuple[_Rows, int]:
        """The rows where ``mask`` is True (all for ``None``) and how many were dropped."""
        dropped = 0 if mask is None else int(mask.size - np.count_nonzero(mask))
        return (self.take(mask) if dropped else self), dropped


def _rating_mask(log: InteractionLog, min_rating: float) -> np.ndarray:
    if log.ratings is None:
        raise DataError(NO_RATING_COLUMN)
    return log.ratings >= min_rating


@dataclasses.dataclass(frozen=True)
class _UserSplit:
    """The kept users (the log's codes, in order of first appearance: a user's index is its rank
    here), their interaction counts and their split, and the split of each row."""

    kept_codes: np.ndarray
    lengths: np.ndarray
    user_split: np.ndarray
    row_split: np.ndarray

    @classmethod
    def of(cls, rows: _Rows, config: PrepareConfig, log: InteractionLog) -> _UserSplit:
        lengths = np.bincount(rows.users, minlength=len(log.user_tokens))
        kept_codes = np.flatnonzero(lengths)
        lengths = lengths[kept_codes]
        user_split = _split_users(rows.split, rows.users, kept_codes, config, log)
        return cls(kept_codes, lengths, user_split, np.repeat(user_split, lengths))

    def splits(self, items: np.ndarray, config: PrepareConfig) -> dict[str, Split]:
        """The train/valid/test splits of ``items`` (each row's item id, rows grouped by user)."""
        num_users = self.kept_codes.size
        splits = {}
        for code, name in enumerate(SPLIT_NAMES):
            members = np.flatnonzero(self.user_split == code)
            offsets = np.zeros(members.size + 1, np.int64)
            np.cumsum(self.lengths[members], out=offsets[1:])
            splits[name] = Split(
                user_index=members.astype(np.int64),
                offsets=offsets,
                items=items[self.row_split == code] if members.size != num_users else items,
            )
        if splits["train"].num_users == 0:
            raise no_training_user(num_users, config)
        return splits


NO_RATING_COLUMN = (
    "min_rating needs a rating column; this format has none (name one with --rating-column for csv/recbole input)"
)


def no_user_left(interactions: int, sources: list[str], config: PrepareConfig, presplit: bool) -> DataError:
    min_user, min_item = config.min_counts(presplit)
    return DataError(
        f"no user left after filtering {interactions} interactions from {', '.join(sources)} "
        f"(min_user_count={min_user}, min_item_count={min_item}, min_rating={config.min_rating}); "
        "lower the thresholds"
    )


def no_training_user(num_users: int, config: PrepareConfig) -> DataError:
    return DataError(f"no training user: {num_users} users kept, train_fraction={config.train_fraction}")


def mixed_split_user(token: str, sources: list[str]) -> DataError:
    return DataError(
        f"user {token!r} appears in more than one of {', '.join(sources)}; a ComiRec split set must split by user"
    )


def settings(config: PrepareConfig, reader_settings: dict[str, Any] | None, presplit: bool) -> dict[str, Any]:
    """The settings recorded in ``metadata.json``: the reader's and the protocol's."""
    min_user, min_item = config.min_counts(presplit)
    return {
        **(reader_settings or {}),
        **dataclasses.asdict(config),
        "min_user_count": min_user,
        "min_item_count": min_item,
        "split": "kept from input files" if presplit else "split_rule",
    }


def metadata(
    *,
    read: dict[str, int],
    splits: dict[str, tuple[int, int]],
    num_items: int,
    num_users: int,
    dropped: dict[str, int],
    train_users_without_cut: int,
    settings: dict[str, Any],
    sources: list[str],
) -> dict[str, Any]:
    """``metadata.json`` of a prepared data set (``splits``: users and interactions of each)."""
    return {
        "format_version": FORMAT_VERSION,
        "num_items": num_items,
        "num_users": num_users,
        "num_interactions": sum(interactions for _, interactions in splits.values()),
        "splits": {name: {"users": users, "interactions": interactions} for name, (users, interactions) in splits.items()},
        "read": read,
        "dropped": {**dropped, "users": read["users"] - num_users, "items": read["items"] - num_items},
        "train_users_without_cut": train_users_without_cut,
        "settings": settings,
        "split_rule": SPLIT_RULE if settings["split"] == "split_rule" else settings["split"],
        "sources": [{"path": str(Path(s).resolve()), "bytes": _size(s)} for s in sources],
        "users_per_shard": settings["users_per_shard"],
    }


def split_keys(tokens: list[str], seed: int) -> np.ndarray:
    """int64 [users]: each user's key under ``SPLIT_RULE``."""
    keys = (int(hashlib.md5(f"{seed}:{token}".encode()).hexdigest()[:15], 16) for token in tokens)
    return np.fromiter(keys, np.int64, len(tokens))


def _codes_by_popularity(codes: np.ndarray, num_codes: int) -> np.ndarray:
    """The codes present in ``codes``, most frequent first; ties keep code order, which is the
    order of first appearance in the log."""
    counts = np.bincount(codes, minlength=num_codes)
    present = np.flatnonzero(counts)
    return present[np.argsort(-counts[present], kind="stable")]


def _is_time_ordered(users: np.ndarray, times: np.ndarray) -> bool:
    """Whether rows are already grouped by user code, ascending, and in time order (as in most
    logs, whose user codes follow first appearance), so the sort can be skipped."""
    later_user = users[1:] > users[:-1]
    if not np.all(later_user | (users[1:] == users[:-1])):
        return False
    return bool(np.all(later_user | (times[1:] >= times[:-1])))


def _first_of_duplicates(
    users: np.ndarray, items: np.ndarray, times: np.ndarray
) -> np.ndarray | None:
    """Mask keeping the first of rows with equal (user, item, timestamp), for rows sorted stably
    by (user, timestamp); ``None`` when no two rows share (user, timestamp)."""
    same_as_previous = (users[1:] == users[:-1]) & (times[1:] == times[:-1])
    if not same_as_previous.any():
        return None
    # Only rows inside a run of equal (user, timestamp) can be duplicates: sort those few by
    # (run, item, position) and drop every row equal to the one before it.
    in_run = np.zeros(users.size, bool)
    in_run[1:] |= same_as_previous
    in_run[:-1] |= same_as_previous
    candidates = np.flatnonzero(in_run)
    run = np.cumsum(~np.concatenate([[False], same_as_previous]))[candidates]
    order = np.lexsort((candidates, items[candidates], run))
    run, cand_items = run[order], items[candidates][order]
    repeated = (run[1:] == run[:-1]) & (cand_items[1:] == cand_items[:-1])
    keep = np.ones(users.size, bool)
    keep[candidates[order][1:][repeated]] = False
    return keep


def _frequency_filter(
    users: np.ndarray,
    items: np.ndarray,
    num_user_codes: int,
    num_item_codes: int,
    min_user: int,
    min_item: int,
    *,
    iterative: bool,
) -> np.ndarray:
    """Mask of rows whose user and item both have enough interactions."""
    keep = np.ones(users.size, bool)
    while True:
        user_counts = np.bincount(users[keep], minlength=num_user_codes)
        item_counts = np.bincount(items[keep], minlength=num_item_codes)
        new_keep = keep & (user_counts >= min_user)[users] & (item_counts >= min_item)[items]
        if not iterative or np.count_nonzero(new_keep) == np.count_nonzero(keep):
            return new_keep
        keep = new_keep


def _split_users(
    row_split: np.ndarray | None,
    users: np.ndarray,
    kept_user_codes: np.ndarray,
    config: PrepareConfig,
    log: InteractionLog,
) -> np.ndarray:
    """int8 [num kept users]: split of each user (index into ``SPLIT_NAMES``)."""
    num_users = kept_user_codes.size
    if row_split is not None:
        starts = np.searchsorted(users, kept_user_codes)
        user_split = row_split[starts]
        mixed = np.flatnonzero(
            np.maximum.reduceat(row_split, starts) != np.minimum.reduceat(row_split, starts)
        )
        if mixed.size:
            raise mixed_split_user(log.user_tokens[int(kept_user_codes[mixed[0]])].as_py(), log.sources)
        return user_split
    keys = split_keys(log.user_tokens.take(pa.array(kept_user_codes)).to_pylist(), config.seed)
    permutation = np.argsort(keys, kind="stable")  # ties: by user index
    num_train, num_valid = config.split_sizes(num_users)
    user_split = np.full(num_users, 2, np.int8)
    user_split[permutation[:num_train]] = 0
    user_split[permutation[num_train : num_train + num_valid]] = 1
    return user_split


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None

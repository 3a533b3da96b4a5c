"""Parquet shards of a split: the split layout of prepared data sets from ``format_version`` 2.

A split directory holds ``part-NNNNN.parquet`` files, shard k holding the split's users
``k * users_per_shard`` to ``(k + 1) * users_per_shard - 1`` (in user-index order), and
``shards.json``, which lists them in order with their counts and where each column's values
lie in the file. A shard has one row group with the columns

    user_index  int64        the user's row in users.parquet
    length      int32        how many items the user has
    items       list<int32>  the user's item ids in time order

written uncompressed, PLAIN-encoded, one page per column. Any Parquet reader reads it; the values
of each column are also the last bytes of its page, so TensorFlow reads them straight from the
file by the byte ranges of ``shards.json`` (``inputs`` streams shards so, with no Python in the
input pipeline: it runs on parameter-server workers too). ``write_shard`` checks those ranges
against the values it wrote. Both preparation engines write shards with ``write_shard``, so they
write the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tfcroloss.pipelines.data import DataError

SHARD_INDEX = "shards.json"
DEFAULT_USERS_PER_SHARD = 1 << 16
SCHEMA = pa.schema(
    [
        pa.field("user_index", pa.int64(), nullable=False),
        pa.field("length", pa.int32(), nullable=False),
        pa.field("items", pa.list_(pa.field("item", pa.int32(), nullable=False)), nullable=False),
    ]
)
_DTYPES = (np.dtype("<i8"), np.dtype("<i4"), np.dtype("<i4"))
_ONE_PAGE = 1 << 30  # rows and bytes per page: a shard column is one page


@dataclasses.dataclass(frozen=True)
class Shard:
    """One shard file of a split: its path, counts and the byte ranges [start, stop) of the
    ``user_index``, ``length`` and ``items`` values in the file."""

    path: str
    users: int
    interactions: int
    ranges: tuple[tuple[int, int], ...]


def shard_name(number: int) -> str:
    return f"part-{number:05d}.parquet"


def write_shard(path: str | Path, user_index: np.ndarray, lengths: np.ndarray, items: np.ndarray) -> dict[str, Any]:
    """Write one shard (users in the given order) and return its entry for ``shards.json``."""
    offsets = np.zeros(lengths.size + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    table = pa.table(
        [
            pa.array(user_index, pa.int64()),
            pa.array(lengths, pa.int32()),
            pa.ListArray.from_arrays(pa.array(offsets), pa.array(items, pa.int32())),
        ],
        schema=SCHEMA,
    )
    pq.write_table(
        table, str(path), compression="none", use_dictionary=False, column_encoding="PLAIN",
        write_statistics=False, data_page_version="1.0", row_group_size=max(1, table.num_rows),
        data_page_size=_ONE_PAGE, max_rows_per_page=_ONE_PAGE, write_batch_size=_ONE_PAGE,
    )
    row_group = pq.read_metadata(str(path)).row_group(0)
    data = Path(path).read_bytes()
    ranges = []
    for column, (values, dtype) in enumerate(zip((user_index, lengths, items), _DTYPES, strict=True)):
        chunk = row_group.column(column)
        stop = chunk.data_page_offset + chunk.total_compressed_size
        start = stop - values.size * dtype.itemsize
        if not np.array_equal(np.frombuffer(data, dtype, values.size, start), values):
            raise RuntimeError(f"{path}: column {chunk.path_in_schema} is not one plain page (pyarrow's writer changed?)")
        ranges.append([start, stop])
    return {"file": Path(path).name, "users": int(user_index.size), "interactions": int(items.size), "bytes": ranges}


def write_split(directory: Path, user_index: np.ndarray, offsets: np.ndarray, items: np.ndarray, users_per_shard: int) -> None:
    """Write a split (CSR) as shards of ``users_per_shard`` users, and its ``shards.json``."""
    directory.mkdir()
    entries = []
    for number, first in enumerate(range(0, user_index.size, users_per_shard)):
        last = min(first + users_per_shard, user_index.size)
        entries.append(
            write_shard(
                directory / shard_name(number),
                user_index[first:last],
                np.diff(offsets[first : last + 1]).astype(np.int32),
                items[offsets[first] : offsets[last]],
            )
        )
    write_index(directory, entries)


def write_index(directory: Path, entries: list[dict[str, Any]]) -> None:
    """``shards.json`` of a split directory, shards in order."""
    (directory / SHARD_INDEX).write_text(json.dumps({"shards": entries}, indent=1) + "\n")


def read_index(directory: Path) -> tuple[Shard, ...]:
    """The shards of a split directory, as ``shards.json`` lists them."""
    index = directory / SHARD_INDEX
    try:
        entries = json.loads(index.read_text())["shards"]
        return tuple(
            Shard(str(directory / entry["file"]), int(entry["users"]), int(entry["interactions"]),
                  tuple((int(start), int(stop)) for start, stop in entry["bytes"]))
            for entry in entries
        )
    except FileNotFoundError:
        raise DataError(f"{index}: missing; the split's shards are not listed") from None
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{index}: not a shard index ({error!r})") from None


def read_split(shards: tuple[Shard, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``user_index``, ``offsets`` and ``items`` of a whole split, read from its shards."""
    user_index, lengths, items = [np.zeros(0, dtype) for dtype in _DTYPES]
    if shards:
        columns = []
        for shard in shards:
            table = pq.read_table(shard.path)
            if table.num_rows != shard.users:
                raise DataError(f"{shard.path}: expected {shard.users} users, got {table.num_rows}")
            columns.append(
                (table["user_index"].to_numpy(), table["length"].to_numpy(),
                 pa.chunked_array([c.flatten() for c in table["items"].chunks], pa.int32()).to_numpy())
            )
        user_index, lengths, items = (np.concatenate(parts) for parts in zip(*columns, strict=True))
    offsets = np.zeros(lengths.size + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return user_index.astype(np.int64), offsets, items.astype(np.int32)

"""Readers that turn interaction logs in their usual formats into one columnar ``InteractionLog``.

User and item ids are read as string tokens and dictionary-encoded while parsing (pyarrow,
multi-threaded), so no Python object is made per row. Timestamps are read as float64.

Formats (``FORMATS``):
- ``comirec``: ``user_id,item_id,time_stamp`` lines, no header (ComiRec / CROLoss files). A set of
  ``NAME_train.txt``, ``NAME_valid.txt``, ``NAME_test.txt`` is read with its split kept.
- ``movielens``: ``u.data`` (ml-100k), ``ratings.dat`` (ml-1m, ml-10m) or ``ratings.csv``
  (ml-20m, ml-25m, ml-latest), or a directory holding one of them.
- ``recbole``: an atomic ``*.inter`` file with a typed header (``user_id:token  item_id:token ...``).
- ``csv``: any CSV/TSV file with a header, or a Parquet file, with the columns named by the caller.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tfcroloss.pipelines.data.dataset import SPLIT_NAMES, DataError
from tfcroloss.registry import lookup

FORMATS = ("comirec", "movielens", "recbole", "csv")
COMIREC_COLUMNS = ("user_id", "item_id", "time_stamp")
MOVIELENS_FILES = ("u.data", "ratings.dat", "ratings.csv")
_TOKEN = pa.dictionary(pa.int32(), pa.string())
_BLOCK_SIZE = 4 << 20


@dataclasses.dataclass
class InteractionLog:
    """Interactions as parallel arrays; ``users``/``items`` index ``user_tokens``/``item_tokens``,
    whose order is the order of first appearance in the log."""

    users: np.ndarray  # int32 [N]
    items: np.ndarray  # int32 [N]
    timestamps: np.ndarray  # float64 [N]
    user_tokens: pa.Array  # string [num distinct users]
    item_tokens: pa.Array  # string [num distinct items]
    sources: list[str]
    ratings: np.ndarray | None = None  # float64 [N]
    split: np.ndarray | None = None  # int8 [N]: index into SPLIT_NAMES, for pre-split input

    @property
    def num_interactions(self) -> int:
        return int(self.users.shape[0])


@dataclasses.dataclass(frozen=True)
class _Columns:
    """Where the fields are in a delimited file and what they are called in messages."""

    user: str
    item: str
    time: str
    rating: str | None = None

    @property
    def wanted(self) -> list[str]:
        return [name for name in (self.user, self.item, self.time, self.rating) if name]


def read_log(
    fmt: str,
    path: str | os.PathLike[str],
    *,
    user_column: str = "user_id",
    item_column: str = "item_id",
    time_column: str = "timestamp",
    rating_column: str | None = None,
    delimiter: str | None = None,
) -> InteractionLog:
    """Read an interaction log of format ``fmt`` (one of ``FORMATS``) from ``path``.

    The column options apply to ``csv`` (and name the columns of a ``recbole`` header, whose
    ``:type`` suffixes are ignored); ``delimiter`` defaults to tab for ``.tsv``/``.tab`` files and
    ``,`` otherwise. ``rating_column`` is read when given (MovieLens ratings are always read).
    """
    path = Path(path)
    lookup(dict.fromkeys(FORMATS), fmt, "format", error=DataError)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if fmt == "comirec":
        return _read_comirec(path)
    if fmt == "movielens":
        return _read_movielens(path)
    columns = _Columns(user_column, item_column, time_column, rating_column)
    if fmt == "recbole":
        return _read_delimited([path], columns, delimiter="\t", quote=False, header="recbole")
    if path.suffix == ".parquet":
        return _read_parquet(path, columns)
    if delimiter is None:
        delimiter = "\t" if path.suffix in (".tsv", ".tab") else ","
    return _read_delimited([path], columns, delimiter=delimiter, quote=True, header="plain")


def comirec_split_files(path: Path) -> dict[str, Path] | None:
    """The ``*_train.txt``/``*_valid.txt``/``*_test.txt`` set that ``path`` names or holds."""
    if path.is_dir():
        trains = sorted(path.glob("*_train.txt"))
        if len(trains) > 1:
            raise DataError(
                f"{path} holds {len(trains)} ComiRec sets ({', '.join(p.name for p in trains)}); "
                "pass one *_train.txt file"
            )
        if not trains:
            raise DataError(f"{path}: no *_train.txt file (ComiRec split set) in this directory")
        path = trains[0]
    stem, _, split = path.stem.rpartition("_")
    if split not in SPLIT_NAMES or path.suffix != ".txt":
        return None
    files = {name: path.with_name(f"{stem}_{name}.txt") for name in SPLIT_NAMES}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DataError(f"incomplete ComiRec split set: missing {', '.join(missing)}")
    return files


def _read_comirec(path: Path) -> InteractionLog:
    columns = _Columns(*COMIREC_COLUMNS)
    files = comirec_split_files(path)
    paths = list(files.values()) if files else [path]
    return _read_delimited(paths, columns, delimiter=",", quote=True, header=COMIREC_COLUMNS)


def _read_movielens(path: Path) -> InteractionLog:
    if path.is_dir():
        found = [path / name for name in MOVIELENS_FILES if (path / name).is_file()]
        if not found:
            raise DataError(f"{path}: no MovieLens ratings file ({', '.join(MOVIELENS_FILES)})")
        path = found[0]
    columns = _Columns("user_id", "item_id", "timestamp", "rating")
    names = ("user_id", "item_id", "rating", "timestamp")
    if path.name == "ratings.csv":
        columns = _Columns("userId", "movieId", "timestamp", "rating")
        return _read_delimited([path], columns, delimiter=",", quote=True, header="plain")
    if path.name == "ratings.dat":
        # '::' is not a single-character delimiter: rewrite it as a tab in memory (MovieLens ids
        # are numbers, so no field holds a tab).
        data = path.read_bytes().replace(b"::", b"\t")
        return _read_delimited(
            [path], columns, delimiter="\t", quote=False, header=names, data=[data]
        )
    if path.name == "u.data":
        return _read_delimited([path], columns, delimiter="\t", quote=False, header=names)
    raise DataError(
        f"{path}: not a MovieLens ratings file; allowed names: {', '.join(MOVIELENS_FILES)}"
    )


def _read_delimited(
    paths: Sequence[Path],
    columns: _Columns,
    *,
    delimiter: str,
    quote: bool,
    header: str | Sequence[str],
    data: Sequence[bytes] | None = None,
) -> InteractionLog:
    """Read delimited files. ``header`` is a tuple of column names for headerless files, or
    ``"plain"``/``"recbole"`` for files whose first line names the columns."""
    tables = []
    for index, path in enumerate(paths):
        raw = data[index] if data is not None else None
        if (len(raw) if raw is not None else path.stat().st_size) == 0:
            raise DataError(f"{path}: empty file, no interactions")
        skip_rows = 0
        if isinstance(header, str):
            names = _header_names(path, raw, delimiter, quote, recbole=header == "recbole")
            skip_rows = 1
        else:
            names = list(header)
        missing = [name for name in columns.wanted if name not in names]
        if missing:
            raise DataError(
                f"{path}: missing column {', '.join(map(repr, missing))}; "
                f"the file has: {', '.join(names)}"
            )
        types = {columns.user: _TOKEN, columns.item: _TOKEN, columns.time: pa.float64()}
        if columns.rating:
            types[columns.rating] = pa.float64()
        source = pa.BufferReader(raw) if raw is not None else str(path)
        try:
            table = pacsv.read_csv(
                source,
                read_options=pacsv.ReadOptions(
                    column_names=names, skip_rows=skip_rows, block_size=_BLOCK_SIZE
                ),
                parse_options=pacsv.ParseOptions(
                    delimiter=delimiter, quote_char='"' if quote else False
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=types,
                    include_columns=columns.wanted,
                    null_values=[],
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid as error:
            raise _locate_error(
                path, raw, names, columns, delimiter, quote, skip_rows, error
            ) from None
        if table.num_rows == 0:
            raise DataError(f"{path}: empty file, no interactions")
        if len(paths) > 1:
            split = np.full(table.num_rows, index, np.int8)
            table = table.append_column("__split", pa.array(split))
        tables.append(table)
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    log = _from_table(table, columns, [str(p) for p in paths])
    if len(paths) > 1:
        log.split = table.column("__split").to_numpy()
    return log


def _header_names(
    path: Path, raw: bytes | None, delimiter: str, quote: bool, *, recbole: bool
) -> list[str]:
    with _open_text(path, raw) as stream:
        first = next(_csv_rows(stream, delimiter, quote), None)
    if first is None:
        raise DataError(f"{path}: empty file, expected a header line")
    names = [field.strip() for field in first[1]]
    if recbole:
        names = [name.rpartition(":")[0] if ":" in name else name for name in names]
    return names


def _open_text(path: Path, raw: bytes | None) -> io.TextIOBase:
    if raw is not None:
        return io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


def _csv_rows(
    stream: io.TextIOBase, delimiter: str, quote: bool
) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) for the non-empty lines of a delimited text stream."""
    reader = csv.reader(
        stream, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quote else csv.QUOTE_NONE
    )
    for fields in reader:
        if fields:
            yield reader.line_num, fields


def _locate_error(
    path: Path,
    raw: bytes | None,
    names: list[str],
    columns: _Columns,
    delimiter: str,
    quote: bool,
    skip_rows: int,
    error: Exception,
) -> DataError:
    """Find the first malformed line (only on the error path, so a Python scan is fine)."""
    numeric = [(names.index(name), name) for name in (columns.time, columns.rating) if name]
    with _open_text(path, raw) as stream:
        for line, fields in _csv_rows(stream, delimiter, quote):
            if line <= skip_rows:
                continue
            if len(fields) != len(names):
                return DataError(
                    f"{path}, line {line}: expected {len(names)} fields ({', '.join(names)}), "
                    f"got {len(fields)}"
                )
            for position, name in numeric:
                try:
                    float(fields[position])
                except ValueError:
                    return DataError(
                        f"{path}, line {line}: field {name!r} must be a number, "
                        f"got {fields[position]!r}"
                    )
    return DataError(f"{path}: cannot parse: {error}")


def _read_parquet(path: Path, columns: _Columns) -> InteractionLog:
    names = pq.read_schema(path).names
    missing = [name for name in columns.wanted if name not in names]
    if missing:
        raise DataError(
            f"{path}: missing column {', '.join(map(repr, missing))}; the file has: {', '.join(names)}"
        )
    table = pq.read_table(path, columns=columns.wanted)
    if table.num_rows == 0:
        raise DataError(f"{path}: empty file, no interactions")
    converted = {}
    for name in columns.wanted:
        column = table.column(name)
        if column.null_count:
            first = int(pc.index(pc.is_null(column), True).as_py())
            raise DataError(f"{path}, row {first + 1}: field {name!r} is null")
        if name in (columns.user, columns.item):
            converted[name] = pc.dictionary_encode(column.cast(pa.string()))
        elif pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
            converted[name] = column.cast(pa.int64()).cast(pa.float64())
        elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            converted[name] = column.cast(pa.float64())
        else:
            raise DataError(
                f"{path}: field {name!r} must be numeric or a timestamp, got type {column.type}"
            )
    return _from_table(pa.table(converted), columns, [str(path)])


def _from_table(table: pa.Table, columns: _Columns, sources: list[str]) -> InteractionLog:
    table = table.unify_dictionaries()
    users, user_tokens = _codes(table.column(columns.user))
    items, item_tokens = _codes(table.column(columns.item))
    return InteractionLog(
        users=users,
        items=items,
        timestamps=table.column(columns.time).to_numpy(),
        user_tokens=user_tokens,
        item_tokens=item_tokens,
        ratings=table.column(columns.rating).to_numpy() if columns.rating else None,
        sources=sources,
    )


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """int32 codes and dictionary of a dictionary column whose chunks share one dictionary."""
    dictionary = column.chunk(0).dictionary
    codes = np.concatenate([chunk.indices.to_numpy() for chunk in column.chunks])
    return codes.astype(np.int32, copy=False), dictionary.cast(pa.string())

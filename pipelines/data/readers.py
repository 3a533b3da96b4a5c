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

A directory holds either a train/valid/test set or one log written in parts (Spark's, Hive's or
Hadoop's ``part-00000...`` files, e.g. ``df.write.parquet(DIR)``): its files are read in name
order as one log, ``_SUCCESS``, ``.crc`` and other hidden files and empty parts left out.

Every text file may be gzip, bzip2, xz or zstd compressed (found by its magic bytes, read as a
stream: never decompressed to disk or held twice), start with a UTF-8 byte order mark, and be in
any ``encoding`` Python knows. Without a time column (``time_column=None``) the order of the lines
is the order of events. What the reader refuses, it refuses with the file and line: a wrong field
count, a number that is not a finite number, an empty id or one holding a line break, a byte the
encoding cannot decode, a line too long for a log.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import lzma
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tfcroloss.pipelines.data import FORMATS, SPLIT_NAMES, DataError
from tfcroloss.registry import lookup

COMIREC_COLUMNS = ("user_id", "item_id", "time_stamp")
MOVIELENS_FILES = ("u.data", "ratings.dat", "ratings.csv")
# name: (magic bytes, file name endings)
COMPRESSIONS = {
    "gzip": (b"\x1f\x8b", (".gz",)),
    "bz2": (b"BZh", (".bz2",)),
    "xz": (b"\xfd7zXZ\x00", (".xz",)),
    "zstd": (b"\x28\xb5\x2f\xfd", (".zst", ".zstd")),
}
DELIMITERS = (",", "\t", ";", "|")
"""What a header line is sniffed for when no delimiter is given."""
MAX_LINE_BYTES = 1 << 20
"""A longer line is refused: no interaction log has one (a wrong --format or a binary file)."""
_TOKEN = pa.dictionary(pa.int32(), pa.string())
_BLOCK_SIZE = 4 << 20
_DECOMPRESSION_ERRORS = (OSError, EOFError, lzma.LZMAError)  # truncated or corrupt archives


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
    """Where the fields are in a delimited file and what they are called in messages;
    ``time`` is None for a log without timestamps."""

    user: str
    item: str
    time: str | None
    rating: str | None = None

    @property
    def wanted(self) -> list[str]:
        return [name for name in (self.user, self.item, self.time, self.rating) if name]

    @property
    def numeric(self) -> list[str]:
        return [name for name in (self.time, self.rating) if name]


@dataclasses.dataclass(frozen=True)
class _Source:
    """One input file: where it is, how to decompress and decode it, and its bytes when they had
    to be rewritten in memory (MovieLens ``::``)."""

    path: Path
    encoding: str
    data: bytes | None = None

    @property
    def is_utf8(self) -> bool:
        return codecs.lookup(self.encoding).name == "utf-8"

    def open_binary(self) -> BinaryIO:
        """The decompressed bytes, as a buffered stream."""
        if self.data is not None:
            return io.BytesIO(self.data)
        return _open_decompressed(self.path)

    def open_text(self) -> io.TextIOBase:
        """The decoded text (strict: an undecodable byte raises), without a byte order mark."""
        encoding = "utf-8-sig" if self.is_utf8 else self.encoding
        return io.TextIOWrapper(self.open_binary(), encoding=encoding, newline="")

    def arrow_input(self) -> pa.NativeFile | str:
        if self.data is not None:
            return pa.BufferReader(self.data)
        compression = compression_of(self.path)
        if compression is None:
            return str(self.path)
        if compression == "xz":
            return pa.PythonFile(lzma.open(self.path, "rb"), mode="r")
        return pa.input_stream(str(self.path), compression=compression)


def compression_of(path: Path) -> str | None:
    """The compression of ``path`` (a key of ``COMPRESSIONS``) from its magic bytes, or None."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    return next((name for name, (magic, _) in COMPRESSIONS.items() if head.startswith(magic)), None)


def _open_decompressed(path: Path) -> BinaryIO:
    compression = compression_of(path)
    if compression is None:
        return open(path, "rb")
    if compression == "xz":
        return lzma.open(path, "rb")
    return io.BufferedReader(pa.input_stream(str(path), compression=compression))


def _logical_suffix(path: Path) -> str:
    """The suffix that names the format: ``.tsv`` for ``log.tsv.gz``."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    endings = {ending for _, names in COMPRESSIONS.values() for ending in names}
    while suffixes and suffixes[-1] in endings:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


@dataclasses.dataclass(frozen=True)
class LogPlan:
    """Where a log's files are and how their fields lie: what ``read_log`` reads, and what the
    Spark engine reads the same way. ``delimiter`` is None for Parquet; ``header`` is ``"plain"``
    or ``"recbole"`` for files whose first line names the fields, else the fields' names."""

    paths: tuple[Path, ...]  # in log order: one file, a train/valid/test set, or the parts of a directory
    columns: _Columns
    delimiter: str | None
    quote: bool
    header: str | tuple[str, ...]
    encoding: str
    presplit: bool = False  # the paths are a train/valid/test set, in that order: their split is kept

    def names(self, index: int) -> list[str]:
        """Every field name of file ``index``, checked to hold the wanted columns."""
        source = _Source(self.paths[index], self.encoding)
        if isinstance(self.header, str):
            names = _header_names(source, self.delimiter, self.quote, recbole=self.header == "recbole")
        else:
            names = list(self.header)
        missing = [name for name in self.columns.wanted if name not in names]
        if missing:
            hint = "; pass --time-column none for a log without timestamps" if self.columns.time in missing else ""
            raise DataError(
                f"{source.path}: missing column {', '.join(map(repr, missing))}; "
                f"the file has: {', '.join(names)}{hint}"
            )
        return names


def plan_log(
    fmt: str,
    path: str | os.PathLike[str],
    *,
    user_column: str = "user_id",
    item_column: str = "item_id",
    time_column: str | None = "timestamp",
    rating_column: str | None = None,
    delimiter: str | None = None,
    encoding: str = "utf-8",
) -> LogPlan:
    """How to read an interaction log of format ``fmt`` (one of ``FORMATS``) from ``path``.

    The column options apply to ``csv`` (and name the columns of a ``recbole`` header, whose
    ``:type`` suffixes are ignored); ``time_column=None`` reads a log without timestamps, in file
    order. ``delimiter`` defaults to tab for ``.tsv``/``.tab`` files (compressed or not), else to
    the commonest of ``DELIMITERS`` in the header. A directory holding a train/valid/test set
    (``split_files``) is read with its split kept. ``rating_column`` is read when given (MovieLens ratings are always read).
    ``encoding`` is that of text files (``latin-1`` for old MovieLens item files, say). Any other
    directory is one log in parts (``log_files``).
    """
    path = Path(path)
    lookup(dict.fromkeys(FORMATS), fmt, "format", error=DataError)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r} (--encoding); e.g. utf-8, latin-1, cp1252") from None
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if fmt == "movielens":
        return _plan_movielens(path, encoding)
    paths, presplit = log_files(path, pattern="*.txt" if fmt == "comirec" else "*", named_sets=fmt == "comirec")
    if fmt == "comirec":
        return LogPlan(paths, _Columns(*COMIREC_COLUMNS), ",", True, COMIREC_COLUMNS, encoding, presplit)
    columns = _Columns(user_column, item_column, time_column, rating_column)
    if fmt == "recbole":
        return LogPlan(paths, columns, "\t", False, "recbole", encoding, presplit)
    if _logical_suffix(paths[0]) == ".parquet":
        return LogPlan(paths, columns, None, False, "plain", encoding, presplit)
    if delimiter is None:
        delimiter = _sniff_delimiter(_Source(paths[0], encoding))
    return LogPlan(paths, columns, delimiter, True, "plain", encoding, presplit)


def read_log(fmt: str, path: str | os.PathLike[str], **options: str | None) -> InteractionLog:
    """Read an interaction log of format ``fmt`` from ``path`` (options: ``plan_log``'s)."""
    plan = plan_log(fmt, path, **options)
    if plan.delimiter is None:
        return _read_parquet(plan)
    if plan.delimiter == "::":
        # MovieLens ratings.dat: '::' is not a single-character delimiter for pyarrow: rewrite it
        # as a tab in memory (MovieLens ids are numbers, so no field holds a tab).
        with _open_decompressed(plan.paths[0]) as stream:
            data = stream.read().replace(b"::", b"\t")
        source = _Source(plan.paths[0], plan.encoding, data)
        return _read_delimited([source], dataclasses.replace(plan, delimiter="\t"))
    return _read_delimited([_Source(p, plan.encoding) for p in plan.paths], plan)


def _sniff_delimiter(source: _Source) -> str:
    """Tab for ``.tsv``/``.tab`` files; otherwise the commonest of ``DELIMITERS`` in the header
    line (tab-separated files named ``.csv`` are common), ``,`` when there is none."""
    if _logical_suffix(source.path) in (".tsv", ".tab"):
        return "\t"
    try:
        with source.open_text() as stream:
            header = stream.readline()
    except (UnicodeDecodeError, *_DECOMPRESSION_ERRORS):
        return ","  # the reader names the problem
    counts = {delimiter: header.count(delimiter) for delimiter in DELIMITERS}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def log_files(path: Path, *, pattern: str = "*", named_sets: bool = False) -> tuple[tuple[Path, ...], bool]:
    """The files of the log at ``path``, in log order, and whether they are a train/valid/test set.

    A directory holds one set (``split_files``) or else one log in parts: its files in name
    order (Spark and Hadoop number them), without hidden files (``_SUCCESS``, ``.part-0.crc``)
    and empty ones (compressed or not), all Parquet or all text. A file is read alone, unless ``named_sets`` and
    its name is that of a set's member (``book_train.txt``)."""
    if not path.is_dir():
        files = split_files(path) if named_sets else None
        return (tuple(files.values()), True) if files else ((path,), False)
    files = split_files(path, pattern=pattern)
    if files:
        return tuple(files.values()), True
    entries = sorted(p for p in path.iterdir() if not p.name.startswith(("_", ".")))
    folders = [p.name for p in entries if p.is_dir()]
    if folders:
        raise DataError(
            f"{path} holds directories ({', '.join(folders[:3])}{', ...' if len(folders) > 3 else ''}): "
            "a partitioned table is not read; pass one of its directories, or a file"
        )
    parts = tuple(p for p in entries if not _holds_nothing(p))
    if not parts:
        raise DataError(
            f"{path} is a directory with no data file (a log's parts, or a train/valid/test set "
            "NAME_train.txt, train.csv.gz, ...)"
        )
    kinds = {_logical_suffix(p) == ".parquet": p.name for p in parts}
    if len(kinds) > 1:
        raise DataError(f"{path} mixes Parquet and text files ({kinds[True]}, {kinds[False]}); pass one log's parts")
    return parts, False


def _holds_nothing(path: Path) -> bool:
    """Whether the file is empty, or a compressed file of nothing (a writer's empty part)."""
    if path.stat().st_size == 0:
        return True
    if compression_of(path) is None:
        return False
    try:
        with _open_decompressed(path) as stream:
            return stream.read(1) == b""
    except _DECOMPRESSION_ERRORS:
        return False  # the reader names the problem


def split_files(path: Path, *, pattern: str = "*") -> dict[str, Path] | None:
    """The train/valid/test set that ``path`` names or holds, or None.

    A set is three files whose names differ only in ``train``/``valid``/``test`` before their
    endings: ComiRec's ``book_train.txt``, ``book_valid.txt``, ``book_test.txt``, or NowPlaying's
    ``train.csv.gz``, ``valid.csv.gz``, ``test.csv.gz``; the split is kept. A directory holds at most one set
    (among the files matching ``pattern``); a file names the set it belongs to."""
    if path.is_dir():
        trains = sorted(p for p in path.glob(pattern) if p.is_file() and _split_of(p) == "train")
        if len(trains) > 1:
            raise DataError(
                f"{path} holds {len(trains)} train/valid/test sets ({', '.join(p.name for p in trains)}); "
                "pass one train file"
            )
        if not trains:
            return None
        path = trains[0]
    split = _split_of(path)
    if split is None:
        return None
    files = {name: path.with_name(path.name.replace(split, name, 1)) for name in SPLIT_NAMES}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DataError(f"incomplete train/valid/test set: missing {', '.join(missing)}")
    return files


def _split_of(path: Path) -> str | None:
    """``train``, ``valid`` or ``test`` if the name's stem (before all endings) ends with it."""
    stem = path.name.split(".", 1)[0]
    return next((name for name in SPLIT_NAMES if stem == name or stem.endswith("_" + name)), None)


def _plan_movielens(path: Path, encoding: str) -> LogPlan:
    if path.is_dir():
        found = [path / name for name in MOVIELENS_FILES if (path / name).is_file()]
        if not found:
            raise DataError(f"{path}: no MovieLens ratings file ({', '.join(MOVIELENS_FILES)})")
        path = found[0]
    columns = _Columns("user_id", "item_id", "timestamp", "rating")
    names = ("user_id", "item_id", "rating", "timestamp")
    name = path.name.lower()
    if name.startswith("ratings.csv"):
        return LogPlan((path,), _Columns("userId", "movieId", "timestamp", "rating"), ",", True, "plain", encoding)
    if name.startswith("ratings.dat"):
        return LogPlan((path,), columns, "::", False, names, encoding)
    if name.startswith("u.data"):
        return LogPlan((path,), columns, "\t", False, names, encoding)
    raise DataError(
        f"{path}: not a MovieLens ratings file; allowed names: {', '.join(MOVIELENS_FILES)}"
    )


def _read_delimited(sources: Sequence[_Source], plan: LogPlan) -> InteractionLog:
    """Read the delimited files of ``plan`` (``sources``: their bytes)."""
    columns, delimiter, quote = plan.columns, plan.delimiter, plan.quote
    skip_rows = 1 if isinstance(plan.header, str) else 0
    tables, layouts = [], []
    for index, source in enumerate(sources):
        names = plan.names(index)
        types = {columns.user: _TOKEN, columns.item: _TOKEN}
        types.update({name: pa.float64() for name in columns.numeric})
        try:
            table = pacsv.read_csv(
                source.arrow_input(),
                read_options=pacsv.ReadOptions(
                    column_names=names, skip_rows=skip_rows, block_size=_BLOCK_SIZE,
                    encoding="utf8" if source.is_utf8 else source.encoding,
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
        except (pa.ArrowInvalid, UnicodeDecodeError, OSError, EOFError) as error:
            raise _locate(source, names, columns, delimiter, quote, skip_rows, error) from None
        layouts.append((source, names, skip_rows))
        tables.append(_one_file(table, source.path, index, plan))
    log = _one_log(tables, plan)
    if _has_bad_values(log):  # vectorised; only a bad log pays for the line scan
        for source, names, skip_rows in layouts:
            error = _locate(source, names, columns, delimiter, quote, skip_rows, None)
            if error is not None:
                raise error
        raise DataError(f"{', '.join(log.sources)}: a timestamp, rating or id is not valid, on no line found")
    return log


def _one_file(table: pa.Table, path: Path, index: int, plan: LogPlan) -> pa.Table:
    """One file's rows, refused when empty and read alone or as a named split; tagged with its split."""
    if table.num_rows == 0 and (plan.presplit or len(plan.paths) == 1):
        raise DataError(f"{path}: empty file, no interactions")
    if plan.presplit:
        table = table.append_column("__split", pa.array(np.full(table.num_rows, index, np.int8)))
    return table


def _one_log(tables: list[pa.Table], plan: LogPlan) -> InteractionLog:
    """The files' rows in order as one log (with each row's split when presplit)."""
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if table.num_rows == 0:
        raise DataError(f"{plan.paths[0].parent}: {len(tables)} empty files, no interactions")
    log = _from_table(table, plan.columns, [str(path) for path in plan.paths])
    if plan.presplit:
        log.split = table.column("__split").to_numpy()
    return log


def _header_names(source: _Source, delimiter: str, quote: bool, *, recbole: bool) -> list[str]:
    try:
        with source.open_text() as stream:
            first = next(_csv_rows(stream, delimiter, quote), None)
    except (UnicodeDecodeError, csv.Error):
        raise _undecodable(source) from None
    except _DECOMPRESSION_ERRORS as error:
        raise DataError(f"{source.path}: cannot decompress: {error}") from None
    if first is None:
        raise DataError(f"{source.path}: empty file, expected a header line")
    names = [field.strip() for field in first[1]]
    if recbole:
        names = [name.rpartition(":")[0] if ":" in name else name for name in names]
    return names


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


def _fields_problem(fields: list[str], names: list[str], columns: _Columns) -> str | None:
    """What is wrong with one line's fields, if anything."""
    if len(fields) != len(names):
        return f"expected {len(names)} fields ({', '.join(names)}), got {len(fields)}"
    for name in columns.numeric:
        value = fields[names.index(name)]
        try:
            number = float(value)
        except ValueError:
            return f"field {name!r} must be a number, got {value!r}"
        if not np.isfinite(number):
            return f"field {name!r} must be a finite number, got {value!r}"
    for name in (columns.user, columns.item):
        value = fields[names.index(name)]
        if not value or "\n" in value or "\r" in value:
            return f"field {name!r} must be a non-empty id without line breaks, got {value!r}"
    return None


def _bad_tokens(tokens: pa.Array) -> pa.BooleanArray:
    """Where ``tokens`` (strings) are empty or hold a line break."""
    tokens = tokens.cast(pa.string())
    breaks = pc.or_(pc.match_substring(tokens, "\n"), pc.match_substring(tokens, "\r"))
    return pc.or_(pc.equal(pc.utf8_length(tokens), 0), breaks)


def _has_bad_values(log: InteractionLog) -> bool:
    """Whether ``log`` holds a non-finite number or a bad id (checked on the vocabularies)."""
    numbers = [log.timestamps] + ([log.ratings] if log.ratings is not None else [])
    if not all(np.isfinite(values.min()) and np.isfinite(values.max()) for values in numbers):
        return True  # min and max are NaN if any value is, and infinite if any value is
    return any(pc.any(_bad_tokens(tokens)).as_py() for tokens in (log.user_tokens, log.item_tokens))


def _locate(
    source: _Source,
    names: list[str],
    columns: _Columns,
    delimiter: str,
    quote: bool,
    skip_rows: int,
    error: Exception | None,
) -> DataError | None:
    """The first bad line, as a ``DataError`` naming file and line (only on the error path, so a
    Python scan is fine); ``error`` is what the fast reader said. None if the file has no bad line
    and the reader said nothing."""
    line = 0
    try:
        with source.open_text() as stream:
            for line, fields in _csv_rows(stream, delimiter, quote):
                if line <= skip_rows:
                    continue
                problem = _fields_problem(fields, names, columns)
                if problem is not None:
                    return DataError(f"{source.path}, line {line}: {problem}")
    except UnicodeDecodeError:
        return _undecodable(source)
    except csv.Error as csv_error:
        return DataError(f"{source.path}, line {line + 1}: cannot read this line ({csv_error})")
    except _DECOMPRESSION_ERRORS as read_error:
        return DataError(f"{source.path}: cannot decompress: {read_error}")
    if line <= skip_rows:
        return DataError(f"{source.path}: empty file, no interactions")
    long_line = _first_long_line(source)
    if long_line is not None or error is None:
        return long_line
    return DataError(f"{source.path}: cannot parse: {error}")


def _undecodable(source: _Source) -> DataError:
    """The first line holding a byte that ``source.encoding`` cannot decode."""
    decoder = codecs.getincrementaldecoder(source.encoding)()
    with source.open_binary() as stream:
        for number, raw in enumerate(stream, start=1):
            try:
                decoder.decode(raw)
            except UnicodeDecodeError as error:
                byte = raw[error.start] if error.start < len(raw) else 0
                return DataError(
                    f"{source.path}, line {number}: byte 0x{byte:02x} is not valid {source.encoding}; "
                    "if the file is in another encoding, pass it with --encoding (e.g. --encoding latin-1)"
                )
    return DataError(f"{source.path}: cannot be decoded as {source.encoding}; pass --encoding")


def _first_long_line(source: _Source) -> DataError | None:
    with source.open_binary() as stream:
        for number, raw in enumerate(iter(lambda: stream.readline(MAX_LINE_BYTES + 1), b""), start=1):
            if len(raw) > MAX_LINE_BYTES:
                return DataError(
                    f"{source.path}, line {number}: longer than {MAX_LINE_BYTES:,} bytes; an interaction "
                    "log has no such line (is --format right, or is this a binary file?)"
                )
    return None


def _read_parquet(plan: LogPlan) -> InteractionLog:
    """The Parquet files of ``plan`` (each checked, then concatenated in order)."""
    tables = [
        _one_file(_parquet_table(path, plan.columns), path, index, plan)
        for index, path in enumerate(plan.paths)
    ]
    return _one_log(tables, plan)


def _parquet_table(path: Path, columns: _Columns) -> pa.Table:
    """The wanted columns of one Parquet file, checked: ids as dictionary-encoded strings,
    numbers (timestamps and dates too) as float64."""
    names = pq.read_schema(path).names
    missing = [name for name in columns.wanted if name not in names]
    if missing:
        raise DataError(
            f"{path}: missing column {', '.join(map(repr, missing))}; the file has: {', '.join(names)}"
        )
    table = pq.read_table(path, columns=columns.wanted)
    converted = {}
    for name in columns.wanted:
        column = table.column(name)
        if column.null_count:
            first = int(pc.index(pc.is_null(column), True).as_py())
            raise DataError(f"{path}, row {first + 1}: field {name!r} is null")
        if name in (columns.user, columns.item):
            bad = _bad_tokens(column)
            if pc.any(bad).as_py():
                first = int(pc.index(bad, True).as_py())
                raise DataError(
                    f"{path}, row {first + 1}: field {name!r} must be a non-empty id without line breaks, "
                    f"got {column[first].as_py()!r}"
                )
            converted[name] = pc.dictionary_encode(column.cast(pa.string()))
        elif pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
            converted[name] = column.cast(pa.int64()).cast(pa.float64())
        elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            converted[name] = column.cast(pa.float64())
        else:
            raise DataError(
                f"{path}: field {name!r} must be numeric or a timestamp, got type {column.type}"
            )
    table = pa.table(converted)
    for name in columns.numeric:
        bad = np.flatnonzero(~np.isfinite(table.column(name).to_numpy()))
        if bad.size:
            raise DataError(f"{path}, row {bad[0] + 1}: field {name!r} must be a finite number")
    return table


def _from_table(table: pa.Table, columns: _Columns, sources: list[str]) -> InteractionLog:
    table = table.unify_dictionaries()
    users, user_tokens = _codes(table.column(columns.user))
    items, item_tokens = _codes(table.column(columns.item))
    if columns.time is None:  # the order of the lines is the order of events
        timestamps = np.arange(table.num_rows, dtype=np.float64)
    else:
        timestamps = table.column(columns.time).to_numpy()
    return InteractionLog(
        users=users,
        items=items,
        timestamps=timestamps,
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

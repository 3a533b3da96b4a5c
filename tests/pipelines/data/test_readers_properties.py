"""Property-based tests of the readers: random valid logs round-trip with exact counts; random
corruptions of a valid log either prepare to the same data set (BOM, CRLF, gratuitous quotes,
compression) or fail with a ``DataError`` that names the corrupted line, never anything else."""

from __future__ import annotations

import csv
import gzip
import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfcroloss.pipelines.data.dataset import DataError
from tfcroloss.pipelines.data.prepare import PrepareConfig, prepare
from tfcroloss.pipelines.data.readers import read_log

EVERYONE = PrepareConfig(min_user_count=0, min_item_count=0, train_fraction=1.0, valid_fraction=0.0)
FORMATS = {  # name: (read_log format, file name, delimiter, quoted, header)
    "comirec": ("comirec", "log.txt", ",", True, None),
    "csv": ("csv", "log.csv", ",", True, "user_id,item_id,timestamp"),
    "tsv": ("csv", "log.tsv", "\t", True, "user_id\titem_id\ttimestamp"),
    "recbole": ("recbole", "log.inter", "\t", False, "user_id:token\titem_id:token\ttimestamp:float"),
}
PROPERTY_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def tokens(quoted: bool) -> st.SearchStrategy[str]:
    """Ids a format can hold: with quoting, commas, quotes, spaces and any letters; without, no
    delimiter or quote characters."""
    alphabet = st.characters(codec="utf-8", exclude_characters="\t\r\n\x00\ufeff" + ("" if quoted else '",'),
                             exclude_categories=("Cs", "Cc"))
    return st.text(alphabet, min_size=1, max_size=6).filter(lambda t: t.strip() == t or quoted)


@st.composite
def logs(draw, fmt: str) -> list[tuple[str, str, int]]:
    quoted = FORMATS[fmt][3]
    users = draw(st.lists(tokens(quoted), min_size=1, max_size=5, unique=True))
    items = draw(st.lists(tokens(quoted), min_size=1, max_size=6, unique=True))
    row = st.tuples(st.sampled_from(users), st.sampled_from(items), st.integers(0, 50))
    return draw(st.lists(row, min_size=1, max_size=25))


def render(fmt: str, rows: list[tuple[str, str, int]]) -> list[str]:
    """The lines of a file of format ``fmt`` (header first, if any), without line ends."""
    _, _, delimiter, quoted, header = FORMATS[fmt]
    buffer = io.StringIO()
    quoting = csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE
    csv.writer(buffer, delimiter=delimiter, quoting=quoting, lineterminator="\n").writerows(rows)
    return ([header] if header else []) + buffer.getvalue().splitlines()


def read(fmt: str, lines: list[str] | bytes, directory: Path):
    read_format, name, *_ = FORMATS[fmt]
    path = directory / name
    path.write_bytes(lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode())
    return read_log(read_format, path)


def expected_sequences(rows: list[tuple[str, str, int]]) -> dict[str, list[str]]:
    """Each user's items by time (stable), repeated (user, item, time) rows dropped."""
    seen, out = set(), {}
    for user, item, time in sorted(rows, key=lambda r: r[2]):
        if (user, item, time) not in seen:
            seen.add((user, item, time))
            out.setdefault(user, []).append(item)
    return out


def sequences(dataset) -> dict[str, list[str]]:
    split = dataset.train
    return {
        dataset.user_tokens[split.user_index[i]]: [dataset.item_tokens[j] for j in split.sequence(i)]
        for i in range(split.num_users)
    }


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_valid_logs_round_trip_with_exact_counts(fmt):
    @PROPERTY_SETTINGS
    @given(rows=logs(fmt))
    def check(rows):
        with tempfile.TemporaryDirectory() as directory:
            dataset = prepare(read(fmt, render(fmt, rows), Path(directory)), EVERYONE)
        expected = expected_sequences(rows)
        assert sequences(dataset) == expected
        assert dataset.metadata["num_interactions"] == sum(map(len, expected.values()))
        assert dataset.num_items == len({item for items in expected.values() for item in items})
        assert int(dataset.item_counts.sum()) == dataset.metadata["num_interactions"]

    check()


BENIGN = ("bom", "crlf", "gzip", "quote")
BREAKING = ("drop_field", "extra_field", "word_time", "nan_time", "bad_byte", "empty_id", "cut_last_line")


def corrupt(fmt: str, lines: list[str], kind: str, at: int) -> tuple[bytes, int | None]:
    """The file's bytes after corruption ``kind`` of data line ``at``, and the 1-based line that
    must be named (None when the corruption is harmless)."""
    delimiter, quoted = FORMATS[fmt][2], FORMATS[fmt][3]
    first_data = 1 if FORMATS[fmt][4] else 0
    index = first_data + at % (len(lines) - first_data)
    fields = next(csv.reader([lines[index]], delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE))

    def joined(values: list[str]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE,
                   lineterminator="").writerow(values)
        return buffer.getvalue()

    lines = list(lines)
    named = index + 1
    if kind == "drop_field":
        lines[index] = joined(fields[:2])
    elif kind == "extra_field":
        lines[index] = joined([*fields, "7"])
    elif kind == "word_time":
        lines[index] = joined([*fields[:2], "soon"])
    elif kind == "nan_time":
        lines[index] = joined([*fields[:2], "nan"])
    elif kind == "empty_id":
        lines[index] = joined(["", *fields[1:]])
    elif kind == "cut_last_line":
        named = len(lines)
        last = lines[-1]
        lines[-1] = last[: last.rindex(delimiter) + 1]  # ends right after a delimiter
    elif kind == "quote" and quoted:
        lines[index] = delimiter.join(f'"{value.replace(chr(34), chr(34) * 2)}"' for value in fields)
        named = None
    elif kind in BENIGN:
        named = None
    data = ("\n".join(lines) + "\n").encode()
    if kind == "bad_byte":
        raw = [line.encode() for line in lines]
        raw[index] = b"\xff" + raw[index]
        data = b"\n".join(raw) + b"\n"
    elif kind == "bom":
        data = b"\xef\xbb\xbf" + data
    elif kind == "crlf":
        data = data.replace(b"\n", b"\r\n")
    elif kind == "gzip":
        data = gzip.compress(data)
    return data, named


@pytest.mark.parametrize("kind", BENIGN + BREAKING)
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_corrupted_logs_prepare_the_same_or_name_the_line(fmt, kind):
    @settings(PROPERTY_SETTINGS, max_examples=8)
    @given(rows=logs(fmt), at=st.integers(0, 100))
    def check(rows, at):
        lines = render(fmt, rows)
        data, named = corrupt(fmt, lines, kind, at)
        with tempfile.TemporaryDirectory() as directory:
            if named is None:
                assert sequences(prepare(read(fmt, data, Path(directory)), EVERYONE)) == expected_sequences(rows)
                return
            with pytest.raises(DataError) as error:
                prepare(read(fmt, data, Path(directory)), EVERYONE)
        assert f"{FORMATS[fmt][1]}, line {named}:" in str(error.value), (kind, str(error.value))

    check()

"""Fetch public data sets and unpack their interaction file, ready for ``tfcroloss prepare``."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from tfcroloss.pipelines.data import DataError
from tfcroloss.pipelines.files import atomic_file, remove_stale_temporaries, temporary_prefix
from tfcroloss.registry import lookup

_GROUPLENS = "https://files.grouplens.org/datasets/movielens"


@dataclasses.dataclass(frozen=True)
class Source:
    """A downloadable zip archive and the interaction file inside it."""

    url: str
    member: str
    format: str = "movielens"


SOURCES = {
    "movielens-100k": Source(f"{_GROUPLENS}/ml-100k.zip", "ml-100k/u.data"),
    "movielens-1m": Source(f"{_GROUPLENS}/ml-1m.zip", "ml-1m/ratings.dat"),
    "movielens-10m": Source(f"{_GROUPLENS}/ml-10m.zip", "ml-10M100K/ratings.dat"),
    "movielens-20m": Source(f"{_GROUPLENS}/ml-20m.zip", "ml-20m/ratings.csv"),
    "movielens-25m": Source(f"{_GROUPLENS}/ml-25m.zip", "ml-25m/ratings.csv"),
    "movielens-latest-small": Source(
        f"{_GROUPLENS}/ml-latest-small.zip", "ml-latest-small/ratings.csv"
    ),
}

# Data sets whose licence or host needs a person in the loop: how to get them by hand.
MANUAL_SOURCES = {
    "amazon-books": (
        "the paper's preprocessed Amazon Books (book_train.txt, book_valid.txt, book_test.txt) "
        "comes with ComiRec (github.com/THUDM/ComiRec, data link in its README); raw reviews: "
        "reviews_Books_5.json from jmcauley.ucsd.edu/data/amazon. Then run `tfcroloss prepare "
        "--format comirec --input DIR/book_train.txt --output OUT`"
    ),
    "taobao": (
        "the paper's preprocessed Taobao (taobao_train.txt, ...) comes with ComiRec "
        "(github.com/THUDM/ComiRec); raw UserBehavior.csv needs a Tianchi login "
        "(tianchi.aliyun.com/dataset/649). Keep the 'pv' rows, then run `tfcroloss prepare "
        "--format csv --input FILE --user-column ... --output OUT`"
    ),
}

Fetch = Callable[[str], BinaryIO]


def download(
    name: str,
    output_dir: str | os.PathLike[str],
    *,
    url: str | None = None,
    fetch: Fetch = urllib.request.urlopen,
) -> tuple[Path, str]:
    """Download data set ``name`` into ``output_dir``; return its interaction file and format.

    ``url`` replaces the source's address (a mirror, or a ``file://`` URL to a local copy).
    The archive is written under a temporary name and removed once the file is extracted.
    """
    if name in MANUAL_SOURCES:
        raise DataError(f"{name} cannot be downloaded automatically: {MANUAL_SOURCES[name]}")
    source = lookup({**SOURCES, **MANUAL_SOURCES}, name, "data set", error=DataError)
    url = url or source.url
    output_dir = Path(output_dir)
    target = output_dir / source.member
    if target.is_file():
        return target, source.format
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output_dir)
    # The archive is scratch, deleted on exit: only its interaction file is kept.
    with tempfile.NamedTemporaryFile(prefix=temporary_prefix(output_dir / f"{name}.zip"), dir=output_dir) as out:
        archive = Path(out.name)
        try:
            with fetch(url) as response:
                shutil.copyfileobj(response, out, length=1 << 20)
            out.flush()
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise DataError(
                f"cannot download {name} from {url}: {reason}. Without internet access, fetch "
                f"the archive elsewhere and pass --url file:///PATH/TO/{Path(source.url).name}, "
                f"or unzip it and run `tfcroloss prepare --format {source.format} --input ...`"
            ) from None
        _extract(archive, source.member, target, url)
    return target, source.format


def _extract(archive: Path, member: str, target: Path, url: str) -> None:
    try:
        with zipfile.ZipFile(archive) as zipped:
            if member not in zipped.namelist():
                raise DataError(f"{url}: archive has no {member}")
            with atomic_file(target) as partial, zipped.open(member) as src, open(partial, "wb") as out:
                shutil.copyfileobj(src, out, length=1 << 20)
    except zipfile.BadZipFile as error:
        raise DataError(f"{url}: not a zip archive: {error}") from None

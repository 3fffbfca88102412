"""Writing and reading tenant backup files (the format: ``backup_format``), one line at a time.

Writing goes to a temporary file (mode 0600) beside the target, renamed over it once
complete and on disk: an interrupted export never leaves a file that looks whole. Reading
checks every line and the trailer: ``read_backup`` raises ``BackupError`` naming the line,
and ``UnsignedBackup`` at the end of a whole file that this server did not sign.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import hmac
import json
import os
import secrets
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

from pydantic import BaseModel, ValidationError

from embedgate.backup.format import (
    HEADER,
    KINDS,
    LINE,
    BackupError,
    CollectionLine,
    DocumentLine,
    EndLine,
    Header,
    KeyLine,
    Line,
    UsageLine,
    decode_vector,
    dump,
)
from embedgate.backup.signing import check_signature, signer

GZIP_MAGIC = b"\x1f\x8b"
GZIP_LEVEL = 1  # vectors hardly compress: level 6 takes 50% longer for 2% less
PROGRESS_BYTES = 1 << 20  # report reading progress every MiB
PAGE, USAGE_PAGE = 1000, 5000  # documents, usage records per read and per write
COUNTED: dict[type[BaseModel], str] = {
    KeyLine: "keys", CollectionLine: "collections", DocumentLine: "documents",
    UsageLine: "usage",
}  # fmt: skip


@dataclass
class Counts:
    keys: int = 0
    collections: int = 0
    documents: int = 0
    usage: int = 0

    def as_dict(self) -> dict[str, int]:
        return {kind: getattr(self, kind) for kind in KINDS}


@dataclass
class Writer:
    """Writes lines, counting them and signing every byte for the trailer with ``key``
    (``signing_key``)."""

    stream: IO[bytes]
    key: bytes
    counts: Counts = field(default_factory=Counts)
    _mac: hmac.HMAC = field(init=False)

    def __post_init__(self) -> None:
        self._mac = signer(self.key)

    def write(self, line: BaseModel) -> None:
        data = dump(line)
        self._mac.update(data)
        self.stream.write(data)
        kind = COUNTED.get(type(line))
        if kind is not None:
            setattr(self.counts, kind, getattr(self.counts, kind) + 1)

    def end(self) -> None:
        signature = self._mac.hexdigest()
        self.stream.write(dump(EndLine(**self.counts.as_dict(), signature=signature)))


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[IO[bytes]]:
    """A new file at ``path`` (mode 0600, gzip if it ends in ``.gz``) once the block ends
    without an exception; on one, nothing is left behind."""
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such directory")
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            if path.name.endswith(".gz"):
                with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL) as packed:
                    yield cast(IO[bytes], packed)
            else:
                yield raw
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system can open a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_backup(path: Path, key: bytes, key_check: str,
                on_bytes: Callable[[int], None] | None = None
                ) -> Iterator[tuple[int, Header | Line]]:  # fmt: skip
    """``(line number, line)`` for the header and every line after it, checked; the trailer
    is checked last, its signature against ``key`` (``signing_key``; ``key_check``, this
    server's ``Backup.key_check``, tells another server's file from an edited one).
    ``on_bytes`` gets the bytes of the file read since its last call."""
    with path.open("rb") as raw:
        gzipped = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        stream = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")) if gzipped else raw
        reported = 0
        try:
            for number, line in _checked(_lines(stream), key, key_check):
                if on_bytes is not None and raw.tell() - reported >= PROGRESS_BYTES:
                    on_bytes(raw.tell() - reported)
                    reported = raw.tell()
                yield number, line
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise BackupError(f"{path}: the compressed data is truncated or damaged ({exc})"
                              ) from None  # fmt: skip
        if on_bytes is not None:
            on_bytes(raw.tell() - reported)


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    number = 0
    for number, data in enumerate(stream, start=1):
        if not data.endswith(b"\n"):
            raise BackupError(f"line {number} is cut off: the file is truncated")
        yield number, data
    if number == 0:
        raise BackupError("the file is empty")


def _checked(lines: Iterator[tuple[int, bytes]], key: bytes, key_check: str
             ) -> Iterator[tuple[int, Header | Line]]:  # fmt: skip
    digest: hmac.HMAC | hashlib._Hash = signer(key)
    header: Header | None = None
    counts = Counts()
    dimensions: dict[str, int] = {}  # collection name -> dimensions
    current: str | None = None  # the collection whose documents may follow
    end: tuple[int, EndLine] | None = None
    for number, data in lines:
        if end is not None:
            raise BackupError(f"line {number}: text after the trailer (line {end[0]})")
        line = _parse(number, data)
        if isinstance(line, EndLine):
            end = (number, line)
            continue
        if isinstance(line, Header):
            header = line
            if header.version == 1:  # unsigned: its checksum still tells damage
                digest = hashlib.sha256()
        digest.update(data)
        if isinstance(line, CollectionLine):
            if line.name in dimensions:
                raise BackupError(f"line {number}: collection {line.name!r} appears twice")
            dimensions[line.name] = line.dimensions
            current = line.name
        elif isinstance(line, DocumentLine):
            _check_document(number, line, current, dimensions)
        elif isinstance(line, (KeyLine, UsageLine)):
            current = None
        kind = COUNTED.get(type(line))
        if kind is not None:
            setattr(counts, kind, getattr(counts, kind) + 1)
        yield number, line
    if end is None:
        raise BackupError("the file ends without its trailer: it is truncated")
    assert header is not None  # line 1 is the header or _parse raised
    _check_end(end[0], end[1], counts)
    check_signature(end[0], end[1], header, digest.hexdigest(), key_check)


def _parse(number: int, data: bytes) -> Header | Line:
    try:
        if number == 1:
            return _header(data)
        return LINE.validate_json(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'line'}: {error['msg']}"
            for error in exc.errors(include_url=False)[:3]
        )
        raise BackupError(f"line {number}: {problems}") from None


def _header(data: bytes) -> Header:
    try:
        found = json.loads(data)
    except ValueError:
        found = None
    if not isinstance(found, dict) or found.get("format") != "embedgate-tenant":
        raise BackupError("line 1: not an embedgate tenant backup")
    if found.get("version") not in (1, 2):
        raise BackupError(f"line 1: format version {found.get('version')!r}; this embedgate "
                          "reads version 2 (and version 1, untrusted)")  # fmt: skip
    return HEADER.validate_python(found)


def _check_document(number: int, line: DocumentLine, current: str | None,
                    dimensions: dict[str, int]) -> None:  # fmt: skip
    if line.collection != current:
        raise BackupError(f"line {number}: a document of {line.collection!r} must follow "
                          "its collection's line")  # fmt: skip
    try:
        decode_vector(line.vector, dimensions[current])
    except ValueError as exc:
        raise BackupError(f"line {number}: {exc}") from None


def _check_end(number: int, end: EndLine, counts: Counts) -> None:
    for kind in KINDS:
        if getattr(end, kind) != getattr(counts, kind):
            raise BackupError(f"line {number}: the trailer counts {getattr(end, kind)} "
                              f"{kind}, the file holds {getattr(counts, kind)}: it is "
                              "incomplete")  # fmt: skip

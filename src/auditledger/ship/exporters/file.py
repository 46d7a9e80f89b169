"""NDJSON files on a local (or mounted) file system, optionally gzip, rotated by lines, size or age.

Kestra's ``FileLogExporter`` properties: ``format`` (JSON or ION: Ion text is
a superset of JSON, so the same lines are valid Ion), ``logFilePrefix`` and
``maxLinesPerFile``; ours beside them: ``directory``, ``gzip``,
``maxBytesPerFile``, ``rotateEvery`` (ISO 8601 duration), ``fsync``.

A file being written is named ``….part``; it gets its final name when it is
rotated or the run ends. Each batch is written and fsynced before the shipper
saves its offset. A run killed mid-batch leaves a ``.part`` file whose tail
may be cut: the next run truncates it to the last whole line (or gzip member)
and renames it, and the unacknowledged batch is sent again.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from auditledger.errors import ConfigError
from auditledger.ship.exporters.base import DeliveryError, Exporter, gzipped
from auditledger.ship.formats import FORMATS, Record, line_formatter, native_line
from auditledger.ship.spec import Props
from auditledger.store import NativeLines


class FileExporter(Exporter):
    name = "file"
    stores_objects = True

    def configure(self, props: Props) -> None:
        self.format = props.choice("format", ("JSON", "ION", *FORMATS), "JSON")
        self.formatter = line_formatter(self.format, f"{props.where}.format")
        self.prefix = props.text("logFilePrefix", "auditlog") or "auditlog"
        if "/" in self.prefix or "\\" in self.prefix or self.prefix.startswith("."):
            raise ConfigError(f"{props.where}.logFilePrefix: a file name prefix, not a path (use directory)")
        self.directory = Path(props.text("directory", ".") or ".").expanduser()
        self.max_lines = props.integer("maxLinesPerFile", 100_000, low=1)
        self.max_bytes = props.integer("maxBytesPerFile", 256 << 20, low=1)
        self.rotate_every = props.duration("rotateEvery", None)
        if self.rotate_every is not None and self.rotate_every <= timedelta(0):
            raise ConfigError(f"{props.where}.rotateEvery: must be a positive duration")
        self.gzip = props.boolean("gzip", False)
        self.gzip_level = props.integer("gzipLevel", 6, low=1, high=9)
        self.fsync = props.boolean("fsync", True)
        ext = ".ion" if self.format == "ION" else ".log" if self.format in ("rfc5424", "cef") else ".ndjson"
        self.suffix = ext + (".gz" if self.gzip else "")
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._first = self._last = -1
        self._lines = self._bytes = 0
        self._opened_at = 0.0

    def open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeliveryError(
                f"file {self.id}: cannot create {self.directory}: {exc.strerror}", retryable=False
            ) from None
        for part in sorted(self.directory.glob(f"{self.prefix}-{self.tenant}-*{self.suffix}.part")):
            self._recover(part)

    def _recover(self, part: Path) -> None:
        data = part.read_bytes()
        keep = _whole_members(data) if self.gzip else data.rfind(b"\n") + 1
        final = part.with_name(part.name.removesuffix(".part").replace(self.suffix, f"-recovered{self.suffix}"))
        if keep == 0:
            part.unlink()
            return
        with part.open("r+b") as f:
            f.truncate(keep)
            os.fsync(f.fileno())
        os.replace(part, final)

    def takes_lines(self) -> bool:
        return self.formatter is native_line

    def send(self, records: Sequence[Record]) -> None:
        fmt = self.formatter
        start = 0
        try:
            while start < len(records):
                if self._file is None:
                    self._start(records[start])
                piece = records[start : start + self.max_lines - self._lines]
                self._write(b"\n".join([fmt(r) for r in piece]) + b"\n", len(piece), piece[-1].seq)
                start += len(piece)
            self._sync()
        except OSError as exc:
            raise DeliveryError(f"file {self.id}: writing {self._path}: {exc.strerror or exc}") from None

    def send_lines(self, lines: NativeLines) -> None:
        data, seqs = lines.data, lines.seqs
        view = memoryview(data)  # slices of the window are written without copying it
        start = pos = 0
        try:
            while start < len(seqs):
                if self._file is None:
                    self._start(Record.from_native(view[pos : data.index(b"\n", pos)]))
                take = min(self.max_lines - self._lines, len(seqs) - start)
                end = len(data) if start + take == len(seqs) else _after_lines(data, pos, take)
                self._write(view[pos:end], take, seqs[start + take - 1])
                start, pos = start + take, end
            self._sync()
        except OSError as exc:
            raise DeliveryError(f"file {self.id}: writing {self._path}: {exc.strerror or exc}") from None

    def _write(self, data: bytes | memoryview, lines: int, last_seq: int) -> None:
        """Append whole lines to the open file, and rotate when it is due."""
        if self.gzip:
            data = gzipped(data, self.gzip_level)  # one gzip member per write: a cut tail is detectable
        assert self._file is not None
        self._file.write(data)
        self._lines += lines
        self._bytes += len(data)
        self._last = last_seq
        if self._due():
            self._finish()

    def _sync(self) -> None:
        if self._file is not None:
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())

    def _due(self) -> bool:
        if self._lines >= self.max_lines or self._bytes >= self.max_bytes:
            return True
        age = time.monotonic() - self._opened_at
        return self.rotate_every is not None and age >= self.rotate_every.total_seconds()

    def _start(self, first: Record) -> None:
        stamp = first.iso_date[:19].replace(":", "").replace("-", "")
        self._path = self.directory / f"{self.prefix}-{self.tenant}-{stamp}-{first.seq:012d}{self.suffix}.part"
        self._file = self._path.open("ab")
        self._first, self._lines, self._bytes = first.seq, 0, 0
        self._opened_at = time.monotonic()

    def _finish(self) -> None:
        if self._file is None or self._path is None:
            return
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())
        self._file.close()
        final = self._path.with_name(
            self._path.name.removesuffix(".part").replace(self.suffix, f"-{self._last:012d}{self.suffix}")
        )
        os.replace(self._path, final)
        self._file, self._path = None, None

    def close(self) -> None:
        try:
            self._finish()
        except OSError as exc:
            raise DeliveryError(f"file {self.id}: closing: {exc.strerror or exc}") from None

    def put_object(self, name: str, data: bytes, content_type: str = "text/plain") -> str:
        target = self.directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        return str(target)


def _after_lines(data: bytes, pos: int, count: int) -> int:
    """The offset just past the ``count``-th newline from ``pos`` (JSON lines hold no raw newline)."""
    for _ in range(count):
        pos = data.index(b"\n", pos) + 1
    return pos


def _whole_members(data: bytes) -> int:
    """Bytes of ``data`` made of complete gzip members (RFC 1952 members may be concatenated)."""
    end = 0
    rest = data
    while rest:
        d = zlib.decompressobj(31)
        try:
            d.decompress(rest)
        except zlib.error:
            return end
        if not d.eof:
            return end
        used = len(rest) - len(d.unused_data)
        end += used
        rest = d.unused_data
    return end

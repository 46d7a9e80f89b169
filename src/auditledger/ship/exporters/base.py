"""What every exporter is, and the helpers HTTP and object-store exporters share.

An exporter gets a batch of :class:`~auditledger.ship.formats.Record` and
either returns (the destination accepted all of it) or raises
:class:`DeliveryError`: ``retryable`` says whether trying again may help,
``failed`` lists the indexes of the records that were not accepted when the
destination took part of the batch (``None``: all of it failed). The shipper
retries, and saves the offset only after everything was accepted.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from typing import Any, ClassVar

import httpx

from auditledger.errors import AuditLedgerError, ConfigError
from auditledger.ship.formats import Record
from auditledger.ship.spec import Props
from auditledger.store import NativeLines

USER_AGENT = "auditledger-shipper/1"
# zlib releases the GIL: a batch's chunks are compressed on both cores while earlier ones are sent.
_GZIP_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ship-gzip")


class DeliveryError(AuditLedgerError):
    """A destination did not accept (all of) a batch."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        failed: Sequence[int] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.failed = None if failed is None else list(failed)
        self.retry_after = retry_after  # seconds the destination asked us to wait (Retry-After)

    def only(self, failed: Sequence[int]) -> DeliveryError:
        """The same failure, for the records at ``failed`` only (the rest were accepted)."""
        return DeliveryError(str(self), retryable=self.retryable, failed=failed, retry_after=self.retry_after)


class Exporter:
    """Base of exporters: build from properties, ``send`` batches, optionally ``put_object``."""

    name: ClassVar[str] = ""
    stores_objects: ClassVar[bool] = False

    def __init__(self, id: str, props: Props, *, tenant: str = "main", offset_key: str = "") -> None:
        self.id = id
        self.tenant = tenant
        self.offset_key = offset_key
        self.configure(props)
        props.finish()

    def configure(self, props: Props) -> None:
        """Read and check properties (``props`` names the property in every error)."""

    def open(self) -> None:
        """Connect, create what the destination needs (index template, log stream ...)."""

    def send(self, records: Sequence[Record]) -> None:
        raise NotImplementedError

    def takes_lines(self) -> bool:
        """Whether :meth:`send_lines` can take the place of :meth:`send` (the native format, sent as is).

        The shipper then hands over the store's ready-made native lines
        (``Store.native_lines``): no Python object per event on the way.
        """
        return False

    def send_lines(self, lines: NativeLines) -> None:
        """Send a window of native lines, as :meth:`send` does; a failure re-sends the whole window."""
        raise NotImplementedError

    def put_object(self, name: str, data: bytes, content_type: str = "text/plain") -> str:
        """Store one named blob (a signed checkpoint); returns where it went."""
        raise ConfigError(f"exporter {self.id!r} ({self.name}) does not store objects")

    def close(self) -> None:
        """Flush and release resources; called even after a failure."""


def chunks(records: Sequence[Record], size: int) -> Iterator[tuple[int, Sequence[Record]]]:
    """(start index, slice) pieces of at most ``size`` records."""
    for start in range(0, len(records), size):
        yield start, records[start : start + size]


def sized_chunks(
    items: Sequence[bytes], max_count: int, max_bytes: int, overhead: int = 0
) -> Iterator[tuple[int, int]]:
    """[start, end) ranges of ``items`` that fit both a count and a byte budget (one item always fits)."""
    start, size = 0, 0
    for i, item in enumerate(items):
        n = len(item) + overhead
        if i > start and (i - start >= max_count or size + n > max_bytes):
            yield start, i
            start, size = i, 0
        size += n
    if start < len(items):
        yield start, len(items)


# ---------------------------------------------------------------- HTTP


class HttpExporter(Exporter):
    """An exporter that POSTs to an HTTP API with httpx; maps statuses to retryable or not."""

    timeout: float = 30.0
    verify: bool | str = True
    _client: httpx.Client | None = None

    def http_options(self, props: Props) -> None:
        """``timeout``, ``caFile``, ``insecureSkipVerify``, and Kestra's ``options`` (HttpConfiguration).

        Of ``options`` we honour ``timeout.readIdleTimeout`` and
        ``ssl.insecureTrustAllCertificates``; its other keys are accepted and ignored.
        """
        options = props.mapping("options")
        kestra_timeout = (options.get("timeout") or {}).get("readIdleTimeout")
        seconds = props.duration("timeout", timedelta(seconds=30))
        if kestra_timeout is not None and props.raw.get("timeout") is None:
            from auditledger.ship.spec import parse_duration

            seconds = parse_duration(kestra_timeout, f"{props.where}.options.timeout.readIdleTimeout")
        assert seconds is not None
        self.timeout = seconds.total_seconds()
        trust_all = bool((options.get("ssl") or {}).get("insecureTrustAllCertificates", False))
        ca = props.text("caFile")
        self.verify = ca if ca else not (props.boolean("insecureSkipVerify", False) or trust_all)

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                timeout=self.timeout, verify=self.verify, headers={"User-Agent": USER_AGENT}, follow_redirects=False
            )
        return self._client

    def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        ok: Sequence[int] = (),
    ) -> httpx.Response:
        """One request; a refused or unreachable destination raises DeliveryError."""
        try:
            response = self.client.request(method, url, content=content, headers=headers, params=params, data=data)
        except httpx.TimeoutException:
            raise DeliveryError(f"{self.name} {self.id}: {method} {_where(url)} timed out") from None
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{self.name} {self.id}: {method} {_where(url)} failed: {type(exc).__name__}") from None
        if response.is_success or response.status_code in ok:
            return response
        raise status_error(f"{self.name} {self.id}: {method} {_where(url)}", response)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def status_error(what: str, response: httpx.Response) -> DeliveryError:
    """429, 408 and 5xx may pass on retry; other 4xx (bad key, bad payload) will not."""
    code = response.status_code
    retryable = code in (408, 409, 425, 429) or code >= 500
    body = response.text[:300].replace("\n", " ")
    wait = response.headers.get("Retry-After", "")
    after = float(wait) if wait.isdigit() else None  # RFC 9110 §10.2.3: seconds (HTTP-dates are rare here)
    return DeliveryError(f"{what} answered {code}: {body}", retryable=retryable, retry_after=after)


def _where(url: str) -> str:
    # Query strings can carry SAS tokens or keys: never put them in a message.
    return url.split("?", 1)[0]


def gzipped(data: bytes | memoryview, level: int = 6) -> bytes:
    return gzip.compress(data, compresslevel=level, mtime=0)


def gzipped_ahead(pieces: Iterable[bytes], level: int = 6) -> Iterator[bytes]:
    """``gzipped`` of each piece in order, compressed in worker threads ahead of the caller's use."""
    return _GZIP_POOL.map(partial(gzipped, level=level), pieces)


def object_name(prefix: str, tenant: str, offset_key: str, first: Record, last: Record, suffix: str) -> str:
    """A deterministic key per seq range: a re-sent batch overwrites its own object, never duplicates it."""
    day = first.iso_date[:10]
    lead = prefix.strip("/")
    return f"{lead + '/' if lead else ''}{tenant}/{day}/{offset_key}-{first.seq:012d}-{last.seq:012d}{suffix}"


def encode_lines(lines: Sequence[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n" if lines else b""


def json_default(value: Any) -> Any:
    raise TypeError(f"not JSON: {type(value).__name__}")

"""Syslog: RFC 5424 messages over UDP (RFC 5426), TCP (RFC 6587) or TLS (RFC 5425).

On TCP and TLS each message is framed by octet counting (``LEN SP MSG``,
RFC 6587 §3.4.1, the framing RFC 5425 mandates); ``framing:
non-transparent`` uses LF-terminated messages for older receivers. The MSG is
the record in ``format`` (native JSON by default, or ``cef``, ``ecs``,
``ocsf``) after a header carrying the event id, tenant and seq as structured
data. A connection error re-sends the whole batch on a new connection. UDP has
no acknowledgement at all: an accepted batch is one the kernel took.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence

from auditledger.errors import ConfigError
from auditledger.ship.exporters.base import DeliveryError, Exporter
from auditledger.ship.formats import DEFAULT_SD_ID, Record, SyslogHeader, cef_text, line_formatter, rfc5424
from auditledger.ship.spec import Props

UDP_MAX = 65_000
_DRAIN_SECONDS = 2.0  # at most this long, at close, for the receiver to close its side


class SyslogExporter(Exporter):
    name = "syslog"

    def configure(self, props: Props) -> None:
        self.host = props.req("host")
        self.protocol = props.choice("protocol", ("udp", "tcp", "tls"), "tcp")
        self.port = props.integer("port", 6514 if self.protocol == "tls" else 514, low=1, high=65535)
        self.framing = props.choice("framing", ("octet-counting", "non-transparent"), "octet-counting")
        facility = props.integer("facility", 13, low=0, high=23)
        sd_id = props.text("sdId", DEFAULT_SD_ID) or DEFAULT_SD_ID
        if "@" not in sd_id:
            raise ConfigError(f"{props.where}.sdId: a private SD-ID looks like name@enterpriseNumber (RFC 5424 §7.2.2)")
        self.header = SyslogHeader(
            facility, props.text("appName", "auditledger") or "auditledger", props.text("hostname", "") or "", sd_id
        )
        self.fmt = props.choice("format", ("native", "ecs", "ocsf", "cef"), "native")
        self.body = line_formatter(self.fmt, f"{props.where}.format")
        self.ca = props.text("caFile")
        self.insecure = props.boolean("insecureSkipVerify", False)
        seconds = props.duration("timeout", None)
        self.timeout = seconds.total_seconds() if seconds else 10.0
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        try:
            if self.protocol == "udp":
                sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_DGRAM)
                sock.connect((self.host, self.port))
            else:
                sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
                if self.protocol == "tls":
                    ctx = ssl.create_default_context(cafile=self.ca)
                    if self.insecure:
                        ctx.check_hostname = False
                        ctx.verify_mode = ssl.CERT_NONE
                    sock = ctx.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(self.timeout)
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryError(f"syslog {self.id}: cannot connect to {self.host}:{self.port}: {exc}") from None
        self._sock = sock
        return sock

    def frame(self, r: Record) -> bytes:
        text = cef_text(r) if self.fmt == "cef" else self.body(r).decode("utf-8")
        msg = rfc5424(r, text, self.header)
        if self.protocol == "udp":
            return msg[:UDP_MAX]
        if self.framing == "octet-counting":
            return b"%d %s" % (len(msg), msg)
        return msg.replace(b"\n", b" ") + b"\n"

    def send(self, records: Sequence[Record]) -> None:
        frames = [self.frame(r) for r in records]
        sock = self._connect()
        try:
            if self.protocol == "udp":
                for data in frames:
                    sock.send(data)
            else:
                sock.sendall(b"".join(frames))
        except (OSError, ssl.SSLError) as exc:
            self._drop()
            raise DeliveryError(f"syslog {self.id}: sending to {self.host}:{self.port}: {exc}") from None

    def close(self) -> None:
        """End the stream so that the receiver reads every byte sent.

        After our FIN, what the receiver still sends is read until it closes too: a socket
        closed with unread bytes (a TLS 1.3 server's session tickets, which nothing here
        reads) answers with a reset, and a reset can make the receiver drop frames it had
        not read yet, though ``sendall`` had returned.
        """
        if self._sock is not None and self.protocol != "udp":
            sock = self._sock
            try:
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(min(self.timeout, _DRAIN_SECONDS))
                while sock.recv(4096):
                    pass
            except (OSError, ssl.SSLError):
                pass  # the receiver reset or went quiet: nothing more to wait for
        self._drop()

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

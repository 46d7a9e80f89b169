"""Browser sessions of the web UI: a sealed cookie and CSRF tokens.

Signing in exchanges an API token for a session cookie. The cookie holds the
token, an expiry and a random session id, sealed with AES-256-GCM under the
server's session key: the browser cannot read or alter it, and every request
re-authenticates the token, so revoking the token ends its sessions at once.
The cookie is ``HttpOnly`` (no script can read it), ``SameSite=Lax`` (other
sites' forms never carry it; a link from a chat message still opens the page)
and ``Secure`` when served over HTTPS.

Every form that changes state carries a CSRF token: an HMAC of the session id
under the same key (OWASP's "synchronizer token" without server state). The
sign-in form, which has no session yet, uses a double-submit cookie instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SESSION_COOKIE = "al_session"
SIGNIN_COOKIE = "al_signin"
COOKIE_PATH = "/ui"
_AAD = b"auditledger-ui-session-v1"


@dataclass(frozen=True, slots=True)
class Session:
    """What a valid session cookie holds."""

    token: str
    sid: str
    expires: int  # unix seconds


class Sealer:
    """Seals and opens session cookies; derives CSRF tokens. One per server process."""

    def __init__(self, secret: str | None, lifetime_s: int) -> None:
        # Without a configured secret each process draws its own key: sessions end when the
        # server restarts, and several workers need AUDITLEDGER_SESSION_SECRET to share them.
        material = secret.encode("utf-8") if secret else os.urandom(32)
        self._key = hashlib.sha256(b"auditledger-ui-key:" + material).digest()
        self._csrf_key = hashlib.sha256(b"auditledger-ui-csrf:" + material).digest()
        self.lifetime_s = lifetime_s

    def seal(self, token: str) -> tuple[str, Session]:
        session = Session(token, secrets.token_hex(16), int(time.time()) + self.lifetime_s)
        nonce = os.urandom(12)
        body = orjson.dumps({"t": session.token, "s": session.sid, "e": session.expires})
        sealed = nonce + AESGCM(self._key).encrypt(nonce, body, _AAD)
        return base64.urlsafe_b64encode(sealed).decode().rstrip("="), session

    def open(self, cookie: str | None) -> Session | None:
        """The session in ``cookie``, or None when missing, forged, altered or expired."""
        if not cookie or len(cookie) > 4096:
            return None
        try:
            raw = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
            body = AESGCM(self._key).decrypt(raw[:12], raw[12:], _AAD)
            data = orjson.loads(body)
            session = Session(str(data["t"]), str(data["s"]), int(data["e"]))
        except (binascii.Error, ValueError, InvalidTag, KeyError, TypeError, orjson.JSONDecodeError):
            return None
        if session.expires <= time.time():
            return None
        return session

    def csrf(self, sid: str) -> str:
        return hmac.new(self._csrf_key, b"csrf:" + sid.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, sid: str, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf(sid), str(given))


def same_text(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two non-empty texts (the double-submit check)."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


def new_nonce() -> str:
    return secrets.token_urlsafe(24)

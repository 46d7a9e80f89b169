"""Bearer tokens for cloud APIs, without their SDKs.

- Google: a service-account key signs a JWT (RS256) that the key's
  ``token_uri`` exchanges for an access token (RFC 7523 JWT bearer grant).
- Microsoft Entra ID: the client-credentials grant (RFC 6749 §4.4) at
  ``{authorityHost}/{tenantId}/oauth2/v2.0/token`` for a ``…/.default`` scope.

Tokens are cached until a minute before they expire and never logged.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import httpx
import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from auditledger.errors import ConfigError
from auditledger.ship.exporters.base import DeliveryError, status_error

GOOGLE_METADATA_URL = "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105  (a URL, not a secret)
AZURE_AUTHORITY = "https://login.microsoftonline.com"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenSource:
    """Caches a bearer token from ``fetch`` (-> token, lifetime seconds)."""

    def __init__(self, fetch: Callable[[], tuple[str, float]]) -> None:
        self._fetch = fetch
        self._token = ""
        self._until = 0.0

    def token(self) -> str:
        if not self._token or time.monotonic() >= self._until:
            token, lifetime = self._fetch()
            self._token, self._until = token, time.monotonic() + max(0.0, lifetime - 60)
        return self._token

    def invalidate(self) -> None:
        self._token = ""


def static_token(token: str) -> TokenSource:
    return TokenSource(lambda: (token, 10**9))


def google_service_account(client: Callable[[], httpx.Client], key_json: str, scope: str, where: str) -> TokenSource:
    try:
        key = orjson.loads(key_json)
        email, pem = key["client_email"], key["private_key"].encode()
        token_uri = key.get("token_uri") or GOOGLE_TOKEN_URI
        private = serialization.load_pem_private_key(pem, password=None)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ConfigError(f"{where}: not a Google service-account key (JSON: client_email, private_key)") from None
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ConfigError(f"{where}: the service-account private key is not an RSA key")

    def fetch() -> tuple[str, float]:
        now = int(time.time())
        header = _b64(orjson.dumps({"alg": "RS256", "typ": "JWT"}))
        claims = _b64(orjson.dumps({"iss": email, "scope": scope, "aud": token_uri, "iat": now, "exp": now + 3600}))
        signing = f"{header}.{claims}".encode()
        signature = private.sign(signing, padding.PKCS1v15(), hashes.SHA256())
        assertion = f"{header}.{claims}.{_b64(signature)}"
        grant = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
        return _exchange(client(), token_uri, grant, "Google token")

    return TokenSource(fetch)


def google_metadata(client: Callable[[], httpx.Client], url: str = GOOGLE_METADATA_URL) -> TokenSource:
    """The attached service account's token from the GCE/GKE metadata server (no key file needed)."""

    def fetch() -> tuple[str, float]:
        try:
            response = client().get(url, headers={"Metadata-Flavor": "Google"})
        except httpx.HTTPError as exc:
            raise DeliveryError(
                f"Google metadata token: {type(exc).__name__} (not on Google Cloud? "
                "set serviceAccount or GOOGLE_APPLICATION_CREDENTIALS)"
            ) from None
        if not response.is_success:
            raise status_error("Google metadata token", response)
        body = response.json()
        return str(body["access_token"]), float(body.get("expires_in", 3600))

    return TokenSource(fetch)


def azure_client_credentials(
    client: Callable[[], httpx.Client], authority: str, tenant_id: str, client_id: str, secret: str, scope: str
) -> TokenSource:
    url = f"{authority.rstrip('/')}/{tenant_id}/oauth2/v2.0/token"
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "scope": scope}
    return TokenSource(lambda: _exchange(client(), url, form, "Entra ID token"))


def _exchange(client: httpx.Client, url: str, form: dict[str, str], what: str) -> tuple[str, float]:
    try:
        response = client.post(url, data=form)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{what}: {url} failed: {type(exc).__name__}") from None
    if not response.is_success:
        raise status_error(f"{what}: {url}", response)
    try:
        body = response.json()
        return str(body["access_token"]), float(body.get("expires_in", 3600))
    except (ValueError, KeyError, TypeError):
        raise DeliveryError(f"{what}: {url} answered without an access_token", retryable=False) from None

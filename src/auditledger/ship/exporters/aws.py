"""boto3 clients from Kestra's AWS properties; boto3 comes with ``auditledger[aws]``.

``accessKeyId``, ``secretKeyId``, ``sessionToken``, ``region`` and
``endpointOverride`` (for S3-compatible stores and tests); without keys boto3's
own chain (environment, profile, instance role) applies.
"""

from __future__ import annotations

from typing import Any

from auditledger.errors import ConfigError
from auditledger.ship.exporters.base import DeliveryError
from auditledger.ship.spec import Props

RETRYABLE_CODES = frozenset(
    [
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalError",
        "InternalFailure",
        "SlowDown",
        "OperationAbortedException",
    ]
)


def client(service: str, props: Props) -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ConfigError(
            f"{props.where}: the {service} exporter needs boto3: pip install 'auditledger[aws]'"
        ) from None
    options: dict[str, Any] = {
        "region_name": props.text("region", "us-east-1"),
        "aws_access_key_id": props.text("accessKeyId"),
        "aws_secret_access_key": props.text("secretKeyId"),
        "aws_session_token": props.text("sessionToken"),
        "endpoint_url": props.text("endpointOverride"),
        # Our shipper retries with its own backoff and offsets; boto3's standard mode adds a few quick ones.
        "config": Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=10, read_timeout=30),
    }
    return boto3.client(service, **{k: v for k, v in options.items() if v is not None})


def delivery_error(what: str, exc: Exception) -> DeliveryError:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        retryable = code in RETRYABLE_CODES or status >= 500 or status == 429
        return DeliveryError(f"{what}: {code} {str(exc)[:200]}", retryable=retryable)
    if isinstance(exc, BotoCoreError):
        return DeliveryError(f"{what}: {type(exc).__name__}: {str(exc)[:200]}")
    raise exc

"""Every setting of auditledger, declared once with its default and help.

Values come from the environment with the ``AUDITLEDGER_`` prefix (for
example ``AUDITLEDGER_PORT=9000``) or from a ``.env`` file, then from command
line options that override them. ``docs/settings.md`` is generated from this
class (``python -m auditledger.settings``) and a test fails when it is stale.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from auditledger.errors import ConfigError


class Settings(BaseSettings):
    """auditledger's configuration; add a field here and regenerate docs/settings.md."""

    model_config = SettingsConfigDict(env_prefix="AUDITLEDGER_", env_file=".env", extra="ignore", frozen=True)

    db: str = Field(
        "sqlite:///auditledger.db",
        description="Store URL: `sqlite:///path.db`, `memory://` or `postgresql://user@host/db`. "
        "`sqlite:///path.db?synchronous=NORMAL` makes single commits faster but may lose the last "
        "acknowledged events on power loss (default FULL: never).",
    )
    host: str = Field("127.0.0.1", description="Address `auditledger serve` listens on.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port `auditledger serve` listens on.")
    insecure_dev: bool = Field(
        False,
        description="Serve without authentication (every request is an admin of every tenant). "
        "For local development only.",
    )
    max_body_bytes: int = Field(
        8 << 20, ge=1024, description="Largest accepted request body in bytes; larger ones get 413."
    )
    max_batch: int = Field(5000, ge=1, description="Most events accepted in one ingest request.")
    max_state_bytes: int = Field(
        1 << 20, ge=1024, description="Largest `before`/`after` of one event, in bytes once encoded as JSON."
    )
    group_commit_ms: float = Field(
        2.0, ge=0, le=1000, description="How long the writer collects requests before one commit (milliseconds)."
    )
    group_commit_max_events: int = Field(
        10_000, ge=1, description="Most events the writer places in one commit."
    )
    writer_queue_events: int = Field(
        100_000,
        ge=1,
        description="Events waiting for the writer before ingest answers 503 with Retry-After.",
    )
    retry_after_seconds: int = Field(1, ge=1, description="`Retry-After` sent with 429/503 answers.")
    page_size_max: int = Field(1000, ge=1, le=1000, description="Largest page a search returns.")
    count_cap: int = Field(
        10_000, ge=1, description="Search totals are exact up to this many; above it the answer says `more`."
    )
    export_max_events: int = Field(
        10_000_000, ge=1, description="Most events one export streams (protects the server from runaway exports)."
    )
    auth_failures_per_minute: int = Field(
        30, ge=1, description="Unknown API tokens one source address may present per minute before it gets 429."
    )
    audit_reads: bool = Field(
        False, description="Record every read of the audit log (search, export, event, proofs) as an "
        "`AUDITLOG`/`READ` event before answering."
    )
    trust_forwarded_for: bool = Field(
        False,
        description="Take the source IP from `X-Forwarded-For` (only behind a proxy you trust).",
    )
    log_level: str = Field("info", description="uvicorn log level: critical, error, warning, info, debug.")
    signing_key_file: str | None = Field(
        None,
        description="Ed25519 private key file (PEM, mode 0600, from `auditledger keys create`) that signs "
        "checkpoints; without it `AUDITLEDGER_SIGNING_KEY` may hold the key itself.",
    )
    log_name: str = Field(
        "auditledger",
        description="The log's name: the signing key's name in signatures and vkeys; checkpoint origins are "
        "`LOG_NAME/TENANT`.",
    )
    checkpoint_interval: float = Field(
        10.0, ge=0, description="Seconds between the server's checkpoints of tenants with new events; 0 turns them off."
    )
    witness_dir: str | None = Field(
        None, description="Directory each new checkpoint is also written to, as `TENANT/SIZE.checkpoint`."
    )
    witness_shipper: str | None = Field(
        None,
        description="A shipper spec (YAML file) whose object-storing exporters (S3 ...) also receive each new "
        "checkpoint, as `checkpoints/TENANT/SIZE.checkpoint`.",
    )
    secrets_file: str | None = Field(
        None,
        description="File the shipper reads `{{ secret('NAME') }}` values from when neither "
        "`AUDITLEDGER_SECRET_NAME` nor `NAME` is set: YAML/JSON mapping or `NAME=value` lines.",
    )
    ui_resource_urls: dict[str, str] = Field(
        {},
        description="Web UI \"open resource\" links: JSON object of resource type -> URL template whose "
        "`{placeholders}` are details keys, e.g. "
        '`{"FLOW": "https://kestra.example.com/ui/flows/edit/{namespace}/{flowId}"}`; http(s) only.',
    )
    session_secret: str | None = Field(
        None,
        description="Key of the web UI's session cookies; set it when several server processes share sessions "
        "(default: a random key per process, so sessions end on restart).",
    )
    session_hours: float = Field(12.0, gt=0, le=720, description="How long a web UI sign-in lasts (hours).")
    purge_min_age_days: float = Field(
        7.0,
        ge=0,
        description="Events younger than this many days are never purged (API, jobs, CLI) unless an admin "
        "passes `force`; protects last night's events from a stolen token.",
    )
    scheduler: bool = Field(
        True,
        description="Run the jobs scheduler inside `auditledger serve`; several processes may, a database "
        "lease lets one fire each due trigger.",
    )


def load(**overrides: Any) -> Settings:
    """Settings from the environment with ``overrides`` (None values ignored); ConfigError when invalid."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(f"setting {name} (AUDITLEDGER_{name.upper()}): {first['msg']}") from None


def markdown() -> str:
    """The settings reference, as written to docs/settings.md."""
    lines = [
        "# Settings",
        "",
        "Every setting can be given as an environment variable (prefix `AUDITLEDGER_`) or in a `.env`",
        "file; command line options of `auditledger serve` override them. This page is generated from",
        "`auditledger.settings.Settings` by `python -m auditledger.settings > docs/settings.md`.",
        "",
        "| setting | environment variable | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for name, info in Settings.model_fields.items():
        default = info.default
        shown = f"`{str(default).lower()}`" if isinstance(default, bool) else f"`{default}`"
        lines.append(f"| `{name}` | `AUDITLEDGER_{name.upper()}` | {shown} | {info.description or ''} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")

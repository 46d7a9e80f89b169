"""Proof commands: keys, checkpoint, prove, evidence export/verify, and ``verify --against``.

A verification failure prints ``verification FAILED: ...`` (naming the first
bad position or the bad signature) on standard error and exits with status 1.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer

from auditledger import checkpoint as ck
from auditledger import evidence, settings, tree
from auditledger.cli.common import DEFAULT_DB, DbOption, TenantOption, open_ledger
from auditledger.errors import ConfigError, ValidationError, VerificationError
from auditledger.ledger import DEFAULT_TENANT, AuditLog

KeyFileOption = Annotated[
    Path | None,
    typer.Option("--key-file", help="Signing key (PEM, 0600); default: setting signing_key_file or env."),
]
VkeyOption = Annotated[
    list[str] | None,
    typer.Option("--key", help="Trusted public key: vkey text or a file holding it; repeatable."),
]

keys_app = typer.Typer(help="Signing keys for checkpoints.", no_args_is_help=True)
evidence_app = typer.Typer(help="Evidence bundles an auditor verifies offline.", no_args_is_help=True)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _signer(key_file: Path | None) -> tree.Signer:
    conf = settings.load()
    return tree.load_signer(key_file or conf.signing_key_file, conf.log_name)


def _witness() -> tree.Witness | None:
    conf = settings.load()
    return tree.witnesses(
        tree.directory_witness(conf.witness_dir) if conf.witness_dir else None,
        tree.shipping_witness(conf.witness_shipper),
    )


def read_vkeys(values: list[str] | None) -> list[str]:
    """Each value is a vkey, or the path of a file whose non-empty lines are vkeys."""
    found: list[str] = []
    for value in values or []:
        path = Path(value)
        if "+" not in value or path.is_file():
            try:
                found += [line.strip() for line in path.read_text("utf-8").splitlines() if line.strip()]
            except (OSError, UnicodeDecodeError) as exc:
                raise ValidationError("--key", f"{value!r} is neither a vkey nor a readable key file ({exc})") from None
        else:
            found.append(value.strip())
    if not found:
        raise ValidationError("--key", "give the trusted public key (vkey, as printed by `auditledger keys create`)")
    for text in found:
        ck.parse_vkey(text)
    return found


def _fail(exc: VerificationError) -> typer.Exit:
    typer.echo(f"verification FAILED: {exc}", err=True)
    return typer.Exit(1)


# --- keys --------------------------------------------------------------------------


@keys_app.command("create")
def keys_create(
    out: Annotated[Path, typer.Option("--out", help="Where to write the private key (created with mode 0600).")],
    name: Annotated[str | None, typer.Option(help="Key name (default: setting log_name).")] = None,
) -> None:
    """Create an Ed25519 signing key and print its public key (vkey)."""
    key = ck.generate_key()
    ck.save_private_key(key, out)
    typer.echo(ck.vkey(name or settings.load().log_name, key.public_key()))


@keys_app.command("show")
def keys_show(
    key_file: KeyFileOption = None,
    name: Annotated[str | None, typer.Option(help="Key name (default: setting log_name).")] = None,
) -> None:
    """Print the public key (vkey) of the configured signing key."""
    signer = _signer(key_file)
    typer.echo(ck.vkey(name or signer.name, signer.key.public_key()))


# --- checkpoints and proofs --------------------------------------------------------


def checkpoint(
    out: Annotated[Path | None, typer.Option("--out", help="Also write the signed checkpoint to this file.")] = None,
    key_file: KeyFileOption = None,
    db: DbOption = DEFAULT_DB,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Sign the tenant's current tree head and print the checkpoint (a C2SP signed note)."""
    signer = _signer(key_file)
    with open_ledger(db) as log:
        made = tree.make_checkpoint(log.store, tenant, signer, witness=_witness())
    if out is not None:
        try:
            out.write_text(made.note, "utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write {out}: {exc.strerror}") from None
    sys.stdout.write(made.note)


def prove(
    id: Annotated[str, typer.Argument(help="Event id.")],
    checkpoint_size: Annotated[
        int | None, typer.Option("--checkpoint-size", help="Tree size to prove against (default: latest checkpoint).")
    ] = None,
    db: DbOption = DEFAULT_DB,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Print the inclusion proof of one event as JSON (checked before it is printed)."""
    with open_ledger(db) as log:
        answer = evidence.inclusion_answer(log.store, tenant, id, checkpoint_size)
    sys.stdout.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")


def check_against(log: AuditLog, against: Path, keys: list[str] | None, tenant: str | None) -> None:
    """``verify --against``: print the result of :func:`tree.verify_against`, exit 1 when it fails."""
    try:
        text = against.read_bytes()
    except OSError as exc:
        raise ValidationError("--against", f"cannot read {against}: {exc.strerror}") from None
    try:
        report = tree.verify_against(log, text, read_vkeys(keys), tenant=tenant)
    except VerificationError as exc:
        raise _fail(exc) from None
    typer.echo(
        f"tenant {report.tenant}: the ledger ({report.size} entries, root {_b64(report.root)}) extends "
        f"checkpoint {against} (size {report.checkpoint_size}); consistency proof of "
        f"{len(report.consistency_proof)} hashes checks out"
    )


# --- evidence ----------------------------------------------------------------------


@evidence_app.command("export")
def evidence_export(
    out: Annotated[Path, typer.Option("--out", help="The bundle to write (.zip).")],
    query: Annotated[str, typer.Option("--query", "-q", help="Search language selecting the events.")] = "",
    max_events: Annotated[int, typer.Option("--max-events", help="Most events in one bundle.")] = (
        evidence.DEFAULT_MAX_EVENTS
    ),
    key_file: KeyFileOption = None,
    db: DbOption = DEFAULT_DB,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Write the selected events, their inclusion proofs and a signed checkpoint to a bundle."""
    from auditledger.query import parse

    selection = parse(query)
    signer = _signer(key_file)
    with open_ledger(db) as log:
        summary = evidence.export_bundle(
            log.store, selection, out, signer, tenant=tenant, query_text=query, max_events=max_events,
            witness=_witness(),
        )
    typer.echo(
        f"wrote {summary.path}: {summary.events} events of tenant {tenant} proven against checkpoint size "
        f"{summary.checkpoint.size}" + (f" (stopped at --max-events {max_events})" if summary.limited else "")
    )
    typer.echo(f"verify it with: auditledger evidence verify {summary.path} --key '{signer.vkey}'")


@evidence_app.command("verify")
def evidence_verify(
    bundle: Annotated[Path, typer.Argument(help="The bundle (.zip).")],
    key: VkeyOption = None,
) -> None:
    """Check a bundle offline against a trusted public key and print a short report."""
    vkeys = read_vkeys(key)
    try:
        report = evidence.verify_bundle(bundle, vkeys)
    except VerificationError as exc:
        raise _fail(exc) from None
    for line in report.lines():
        typer.echo(line)
    typer.echo("OK: every event in the bundle is proven to be in the signed checkpoint")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    app.add_typer(evidence_app, name="evidence")
    app.command()(checkpoint)
    app.command()(prove)

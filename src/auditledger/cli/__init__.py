"""The ``auditledger`` command.

Every module of this package that defines ``register(app)`` adds its commands;
the core ones (record, search, show, verify, demo) live in ``core.py``. Any
:class:`~auditledger.errors.AuditLedgerError` becomes one clear line on
standard error and exit status 1, never a traceback.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import typer

# Typer vendors click; its Context is the one the group receives.
from typer._click.core import Context
from typer.core import TyperGroup

from auditledger.errors import AuditLedgerError


class _Group(TyperGroup):
    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except AuditLedgerError as exc:
            typer.echo(f"error: {exc.diagnostics()}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Group,
    help="Verifiable audit logs: record, search, prove, purge and ship.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _discover() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(app)


_discover()


def main() -> None:
    app()

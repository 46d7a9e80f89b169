"""The token and serve commands: create prints the token once, list never shows it, revoke takes effect,
and serve refuses to start without a token."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from auditledger import AuditLog
from auditledger.cli import app
from auditledger.server.auth import Tokens

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_create_list_revoke(db_url: str) -> None:
    """create prints a working token, list shows its record but not the secret, revoke makes it fail."""
    code, out, err = run("token", "create", "--role", "auditor", "--tenant", "acme", "--expires", "P7D", "--db", db_url)
    assert code == 0, err
    secret = out.strip()
    assert secret.startswith("alt_") and "not shown again" in err
    with AuditLog.open(db_url) as log:
        principal = Tokens(log.store).authenticate(secret)
    assert (principal.role, principal.tenant) == ("auditor", "acme")
    code, out, _ = run("token", "list", "--json", "--db", db_url)
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["id"] == principal.token_id and row["active"] and row["expires_at"]
    assert secret not in out
    code, out, _ = run("token", "revoke", principal.token_id, "--db", db_url)
    assert code == 0
    code, out, _ = run("token", "list", "--json", "--db", db_url)
    assert json.loads(out)["active"] is False


def test_bad_input_is_one_line(db_url: str) -> None:
    """A bad role, tenant, expiry or token id is one clear error line and exit status 1."""
    for args, needle in [
        (("create", "--role", "root", "--tenant", "acme"), "role"),
        (("create", "--role", "admin", "--tenant", "Bad Tenant"), "tenant"),
        (("create", "--role", "admin", "--tenant", "acme", "--expires", "soon"), "expires"),
        (("revoke", "tok_nope"), "no token"),
    ]:
        code, _, err = run("token", *args, "--db", db_url)
        assert code == 1 and err.startswith("error:") and needle in err, (args, err)


def test_serve_refuses_without_a_token(db_url: str) -> None:
    """serve stops with a message that says how to create a token or use --insecure-dev."""
    code, _, err = run("serve", "--db", db_url, "--port", "0")
    assert code == 1
    assert "auditledger token create --role admin --tenant '*'" in err and "--insecure-dev" in err

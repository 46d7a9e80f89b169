"""Signing keys and signed checkpoints in the C2SP signed-note format."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from auditledger import checkpoint as ck
from auditledger.errors import ConfigError, ValidationError, VerificationError

# The signed-note example of golang.org/x/mod/sumdb/note, the format's reference
# implementation. Ed25519 is deterministic, so our output must match it byte for byte.
GO_SKEY_MATERIAL = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"  # base64(0x01 || seed)
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_NOTE = (
    GO_TEXT + "\n— PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)

ORIGIN = "auditledger.example/main"
ROOT = bytes(range(32))


def go_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(GO_SKEY_MATERIAL)[1:])


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return ck.generate_key()


@pytest.fixture
def note(key: Ed25519PrivateKey) -> str:
    return ck.sign_checkpoint(ck.Checkpoint(ORIGIN, 42, ROOT), key, ORIGIN)


# --- interoperability with the reference implementation ---------------------------


def test_vkey_matches_go_reference() -> None:
    """The vkey text form and key hash equal those of Go's sumdb/note example."""
    assert ck.vkey("PeterNeumann", go_key().public_key()) == GO_VKEY
    assert ck.key_hash("PeterNeumann", go_key().public_key()) == 0xC74F20A3


def test_sign_note_matches_go_reference() -> None:
    """A note signed with the reference key is byte-identical to Go's signed example."""
    assert ck.sign_note(GO_TEXT, go_key(), "PeterNeumann") == GO_NOTE


def test_parse_vkey_round_trips_and_checks_its_hash() -> None:
    """A vkey parses back to the same text; one with a wrong hash is refused."""
    assert str(ck.parse_vkey(GO_VKEY)) == GO_VKEY
    with pytest.raises(ValidationError, match=r"does not match"):
        ck.parse_vkey(GO_VKEY.replace("c74f20a3", "c74f20a4"))
    for bad in ["PeterNeumann", "Peter+c74f20a3", "a b+c74f20a3+AAAA", "P+C74F20A3+AAAA"]:
        with pytest.raises(ValidationError):
            ck.parse_vkey(bad)


# --- checkpoints -------------------------------------------------------------------


def test_checkpoint_note_has_the_tlog_checkpoint_layout(note: str, key: Ed25519PrivateKey) -> None:
    """The note is origin, size, base64 root, a blank line, then an em-dash signature line."""
    lines = note.split("\n")
    assert lines[:4] == [ORIGIN, "42", base64.b64encode(ROOT).decode(), ""]
    assert lines[4].startswith(f"\u2014 {ORIGIN} ")
    blob = base64.b64decode(lines[4].rsplit(" ", 1)[1])
    assert int.from_bytes(blob[:4], "big") == ck.key_hash(ORIGIN, key.public_key())
    assert len(blob) == 4 + 64
    assert lines[5:] == [""]


def test_sign_parse_verify_round_trip(note: str, key: Ed25519PrivateKey) -> None:
    """A signed checkpoint parses and verifies back to the same checkpoint."""
    cp, sigs = ck.parse_checkpoint(note)
    assert cp == ck.Checkpoint(ORIGIN, 42, ROOT)
    assert [(s.name, s.key_hash) for s in sigs] == [(ORIGIN, ck.key_hash(ORIGIN, key.public_key()))]
    vkey = ck.vkey(ORIGIN, key.public_key())
    assert ck.verify_checkpoint(note, [vkey]) == cp
    assert ck.verify_checkpoint(note.encode(), vkey, origin=ORIGIN) == cp
    assert ck.verify_checkpoint(note, [ck.parse_vkey(vkey)]) == cp


def test_extension_lines_are_signed_and_kept(key: Ed25519PrivateKey) -> None:
    """Extension lines after the root survive the round trip and are covered by the signature."""
    cp = ck.Checkpoint(ORIGIN, 7, ROOT, ("Timestamp: 1700000000",))
    note = ck.sign_checkpoint(cp, key, ORIGIN)
    vkey = ck.vkey(ORIGIN, key.public_key())
    assert ck.verify_checkpoint(note, [vkey]) == cp
    with pytest.raises(VerificationError, match=r"bad signature"):
        ck.verify_checkpoint(note.replace("1700000000", "1700000001"), [vkey])


@settings(max_examples=25)
@given(
    origin=st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs", "Zl", "Zp"]), min_size=1),
    size=st.integers(0, 2**63),
    root=st.binary(min_size=32, max_size=32),
)
def test_any_checkpoint_round_trips(origin: str, size: int, root: bytes) -> None:
    """Any origin line, size and root survive signing, parsing and verification."""
    key = go_key()
    cp = ck.Checkpoint(origin, size, root)
    assert ck.verify_checkpoint(ck.sign_checkpoint(cp, key, "k"), ck.vkey("k", key.public_key())) == cp


@pytest.mark.parametrize(
    ("old", "new"),
    [("42\n", "43\n"), (ORIGIN, "auditledger.example/other"), ("AAECAw", "AAECBA")],
)
def test_edited_body_fails_with_bad_signature(note: str, key: Ed25519PrivateKey, old: str, new: str) -> None:
    """Changing the size, origin or root of a signed checkpoint breaks its signature."""
    edited = note.replace(old, new, 1)
    assert edited != note
    with pytest.raises(VerificationError, match=r"bad signature .* key auditledger\.example/main\+"):
        ck.verify_checkpoint(edited, [ck.vkey(ORIGIN, key.public_key())])


def test_checkpoint_signed_by_another_key_is_rejected(note: str) -> None:
    """A note is refused when no trusted key signed it, even one under the same name."""
    other = ck.generate_key()
    with pytest.raises(VerificationError, match=r"unknown keys: auditledger\.example/main\+"):
        ck.verify_checkpoint(note, [ck.vkey(ORIGIN, other.public_key())])


def test_unknown_cosignatures_are_ignored_but_bad_trusted_ones_fail(note: str, key: Ed25519PrivateKey) -> None:
    """A witness's cosignature by an unknown key is ignored; a forged trusted one is not."""
    vkey = ck.vkey(ORIGIN, key.public_key())
    witness = ck.sign_checkpoint(ck.parse_checkpoint(note)[0], ck.generate_key(), "witness")
    cosigned = note + witness.split("\n\n", 1)[1]
    assert ck.verify_checkpoint(cosigned, [vkey]).size == 42
    sig_line = note.split("\n")[4]
    forged_blob = base64.b64decode(sig_line.rsplit(" ", 1)[1])[:4] + bytes(64)
    forged = cosigned + f"\u2014 {ORIGIN} {base64.b64encode(forged_blob).decode()}\n"
    with pytest.raises(VerificationError, match=r"bad signature"):
        ck.verify_checkpoint(forged, [vkey])


def test_origin_mismatch_is_rejected(note: str, key: Ed25519PrivateKey) -> None:
    """A validly signed checkpoint for another log is refused when an origin is expected."""
    with pytest.raises(VerificationError, match=r"origin"):
        ck.verify_checkpoint(note, [ck.vkey(ORIGIN, key.public_key())], origin="other.example")


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda n: n.replace("\n\n", "\n"), "no blank line"),
        (lambda n: n.rstrip("\n"), "no final newline"),
        (lambda n: n.split("\n\n")[0] + "\n\n", "no signature lines"),
        (lambda n: n.replace("\u2014", "-"), "does not start with"),
        (lambda n: n.replace("\n42\n", "\n042\n"), "canonical decimal"),
        (lambda n: n.replace("\n42\n", "\n-1\n"), "canonical decimal"),
        (lambda n: n.replace("\n42\n", "\n4x\n"), "canonical decimal"),
        (lambda n: n.replace("\n42\n", "\n\u0664\u0662\n"), "canonical decimal"),
        (lambda n: n.replace("AAECAw", "AAEC!w"), "not base64"),
        (lambda n: n.replace(base64.b64encode(ROOT).decode(), "AAAA"), "32 bytes"),
        (lambda n: n.replace("\n", "\r\n"), "control characters"),
        (lambda n: n.replace("\n42\n", "\n"), "origin, size and root"),
        (lambda n: n.replace("\n\n", "\n\nx\n\n"), "empty line in body"),
        (lambda n: n[: n.rindex(" ")] + " AAAA\n", "too short"),
        (lambda n: n[: n.rindex(" ")] + " ???\n", "bad signature line"),
        (lambda n: n.replace(f"\u2014 {ORIGIN} ", "\u2014 a+b "), "bad signature line"),
        (lambda n: n + "\u2014 x AAAAAAA=\n" * 100, "more than 100"),
    ],
)
def test_malformed_notes_fail_clearly(
    note: str, key: Ed25519PrivateKey, mangle: Callable[[str], str], reason: str
) -> None:
    """Each kind of malformed note is refused as malformed, saying what is wrong."""
    with pytest.raises(VerificationError, match=f"malformed checkpoint: .*{reason}"):
        ck.verify_checkpoint(mangle(note), [ck.vkey(ORIGIN, key.public_key())])


def test_non_utf8_bytes_are_malformed() -> None:
    """A note given as bytes that are not UTF-8 is malformed."""
    with pytest.raises(VerificationError, match=r"not UTF-8"):
        ck.parse_checkpoint(b"\xff\n1\n\n")


def test_bad_inputs_to_signing_name_the_field(key: Ed25519PrivateKey) -> None:
    """Invalid key names, origins, sizes and roots are ValidationErrors naming the field."""
    cp = ck.Checkpoint(ORIGIN, 1, ROOT)
    with pytest.raises(ValidationError, match=r"^name:"):
        ck.sign_checkpoint(cp, key, "has space")
    with pytest.raises(ValidationError, match=r"^origin:"):
        ck.Checkpoint("two\nlines", 1, ROOT)
    with pytest.raises(ValidationError, match=r"^size:"):
        ck.Checkpoint(ORIGIN, -1, ROOT)
    with pytest.raises(ValidationError, match=r"^root:"):
        ck.Checkpoint(ORIGIN, 1, ROOT[:31])
    with pytest.raises(ValidationError, match=r"^trusted_vkeys:"):
        ck.verify_checkpoint(ck.sign_checkpoint(cp, key, "k"), [])


# --- key storage -------------------------------------------------------------------


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_key_file_is_private_and_round_trips(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """A saved key file has mode 0600, loads back to the same key and is never clobbered."""
    path = tmp_path / "signing.key"
    ck.save_private_key(key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert _raw(ck.load_private_key(path)) == _raw(key)
    with pytest.raises(ConfigError, match=r"already exists"):
        ck.save_private_key(ck.generate_key(), path)
    assert _raw(ck.load_private_key(path)) == _raw(key)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_loose_key_file_permissions_are_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    """A key file readable by group or others is refused with the chmod that fixes it."""
    path = tmp_path / "signing.key"
    ck.save_private_key(key, path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"mode 0644.*chmod 600"):
        ck.load_private_key(path)
    ck.save_private_key(key, path, overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_missing_or_garbled_key_file_is_a_config_error(tmp_path: Path) -> None:
    """An absent or unreadable key file is a ConfigError naming the file."""
    with pytest.raises(ConfigError, match=r"cannot read key file"):
        ck.load_private_key(tmp_path / "absent.key")
    garbled = tmp_path / "garbled.key"
    garbled.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    garbled.chmod(0o600)
    with pytest.raises(ConfigError, match=r"garbled\.key: unreadable PEM"):
        ck.load_private_key(garbled)


def test_key_from_environment_as_pem_or_base64(monkeypatch: pytest.MonkeyPatch, key: Ed25519PrivateKey) -> None:
    """The environment variable may hold a PEM key or the base64 of the raw 32-byte seed."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    monkeypatch.setenv(ck.SIGNING_KEY_ENV, pem)
    assert _raw(ck.load_private_key_from_env()) == _raw(key)
    monkeypatch.setenv(ck.SIGNING_KEY_ENV, base64.b64encode(_raw(key)).decode() + "\n")
    assert _raw(ck.load_private_key_from_env()) == _raw(key)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "is not set"),
        ("not base64!", "neither PEM nor base64"),
        (base64.b64encode(bytes(31)).decode(), "32 bytes, this is 31"),
    ],
)
def test_bad_key_in_environment_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, value: str | None, reason: str
) -> None:
    """A missing, non-base64 or wrong-length key in the environment is a ConfigError."""
    if value is None:
        monkeypatch.delenv(ck.SIGNING_KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(ck.SIGNING_KEY_ENV, value)
    with pytest.raises(ConfigError, match=f"{ck.SIGNING_KEY_ENV}.*{reason}"):
        ck.load_private_key_from_env()

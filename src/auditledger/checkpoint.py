"""Signing keys and signed checkpoints.

A checkpoint commits to a tree size and root. It is written as a C2SP
tlog-checkpoint (https://c2sp.org/tlog-checkpoint) inside a C2SP signed note
(https://c2sp.org/signed-note), the format Go's sumdb, Sigstore and the
transparency-log witnesses share, so that any of their verifiers can check it::

    example.com/audit/main          origin
    42                              tree size, decimal
    qINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=     base64 root hash
                                    blank line
    — example.com/audit/main Az3grlgt...           signature line(s)

Each signature line is an em dash (U+2014), a space, the key name, a space and
base64(key hash || Ed25519 signature of the body). The key hash is the first 4
bytes of SHA-256(name || "\\n" || 0x01 || public key), and the public key is
published as a "vkey": ``name+hex(key hash)+base64(0x01 || public key)``.

Private keys are kept in a file (PKCS#8 PEM, mode 0600) or given in an
environment variable, either as such a PEM or as the base64 of the raw 32-byte
Ed25519 seed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from auditledger.errors import ConfigError, ValidationError, VerificationError

SIGNING_KEY_ENV = "AUDITLEDGER_SIGNING_KEY"

_ALG_ED25519 = 0x01  # signed-note signature type byte for Ed25519
_SIG_PREFIX = "\u2014 "  # "— "
_MAX_SIGNATURES = 100  # the signed-note spec lets verifiers cap this
_ROOT_SIZE = 32


# --- keys ----------------------------------------------------------------------


def generate_key() -> Ed25519PrivateKey:
    """A new Ed25519 signing key."""
    return Ed25519PrivateKey.generate()


def save_private_key(key: Ed25519PrivateKey, path: str | Path, *, overwrite: bool = False) -> None:
    """Write ``key`` as PKCS#8 PEM to ``path``, readable by its owner only (0600)."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        # Created 0600 from the start: no window in which another user can read it.
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ConfigError(f"key file {path} already exists; refusing to overwrite it") from None
    except OSError as exc:
        raise ConfigError(f"cannot write key file {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as f:
        if hasattr(os, "fchmod"):
            os.fchmod(f.fileno(), 0o600)  # an overwritten file keeps its old mode otherwise
        f.write(pem)


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """Read a signing key file, refusing one that group or others can access."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if os.name == "posix" and mode & 0o077:
                raise ConfigError(
                    f"key file {path} is accessible by group or others "
                    f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
                )
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}") from exc
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(f"key file {path} is not a PEM or base64 Ed25519 key") from None
    return parse_private_key(text, source=f"key file {path}")


def load_private_key_from_env(var: str = SIGNING_KEY_ENV) -> Ed25519PrivateKey:
    """Read a signing key from environment variable ``var`` (PEM or base64 raw seed)."""
    text = os.environ.get(var)
    if not text:
        raise ConfigError(f"environment variable {var} is not set")
    return parse_private_key(text, source=f"environment variable {var}")


def parse_private_key(text: str, *, source: str = "key") -> Ed25519PrivateKey:
    """An Ed25519 key from PKCS#8 PEM or from the base64 of its raw 32-byte seed."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{source}: unreadable PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{source}: not an Ed25519 key")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{source}: neither PEM nor base64") from None
    if len(raw) != 32:
        raise ConfigError(f"{source}: a raw Ed25519 key is 32 bytes, this is {len(raw)}")
    return Ed25519PrivateKey.from_private_bytes(raw)


def _raw_public(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _check_name(name: str, field: str) -> None:
    # signed-note: non-empty, no Unicode spaces, no "+" (the vkey separator).
    if not name or "+" in name or any(c.isspace() for c in name):
        raise ValidationError(field, f"key name {name!r} must be non-empty, without spaces or '+'")


def key_hash(name: str, public_key: Ed25519PublicKey) -> int:
    """The signed-note key hash: SHA-256(name || "\\n" || 0x01 || key)[:4], big-endian."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([_ALG_ED25519]) + _raw_public(public_key))
    return int.from_bytes(digest.digest()[:4], "big")


@dataclass(frozen=True)
class VerifierKey:
    """A named public key that checkpoints are verified against."""

    name: str
    key_hash: int
    public_key: Ed25519PublicKey

    def __str__(self) -> str:
        material = base64.b64encode(bytes([_ALG_ED25519]) + _raw_public(self.public_key)).decode()
        return f"{self.name}+{self.key_hash:08x}+{material}"


def vkey(name: str, public_key: Ed25519PublicKey) -> str:
    """The public key's text form: ``name+hex(key hash)+base64(0x01 || key)``."""
    _check_name(name, "name")
    return str(VerifierKey(name, key_hash(name, public_key), public_key))


def parse_vkey(text: str) -> VerifierKey:
    """Parse a vkey, checking that its key hash matches its name and key."""
    # maxsplit: the name has no "+", the hash is hex, but base64 may contain "+".
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise ValidationError("vkey", "expected name+keyhash+base64key")
    name, hash_hex, material = parts
    _check_name(name, "vkey")
    if len(hash_hex) != 8 or any(c not in "0123456789abcdef" for c in hash_hex):
        raise ValidationError("vkey", f"key hash {hash_hex!r} is not 8 lowercase hex digits")
    try:
        raw = base64.b64decode(material, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("vkey", "key material is not base64") from None
    if len(raw) != 33 or raw[0] != _ALG_ED25519:
        raise ValidationError("vkey", "key material is not 0x01 followed by a 32-byte Ed25519 key")
    public_key = Ed25519PublicKey.from_public_bytes(raw[1:])
    if key_hash(name, public_key) != int(hash_hex, 16):
        raise ValidationError("vkey", "key hash does not match the name and key")
    return VerifierKey(name, int(hash_hex, 16), public_key)


# --- checkpoints ---------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A tree size and root hash, as committed to by a log named ``origin``."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or any(c < " " for c in self.origin):
            raise ValidationError("origin", "must be a non-empty line without control characters")
        if self.size < 0:
            raise ValidationError("size", f"must be >= 0, got {self.size}")
        if len(self.root) != _ROOT_SIZE:
            raise ValidationError("root", f"must be {_ROOT_SIZE} bytes, got {len(self.root)}")
        for ext in self.extensions:
            if not ext or "\n" in ext:
                raise ValidationError("extensions", "each extension is one non-empty line")

    def body(self) -> str:
        """The note text that is signed, ending with a newline."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "".join(line + "\n" for line in lines)


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a signed note, not yet verified."""

    name: str
    key_hash: int
    signature: bytes


def sign_note(text: str, key: Ed25519PrivateKey, name: str) -> str:
    """A signed note: ``text`` (ending in a newline), a blank line, one signature line."""
    _check_name(name, "name")
    if not text.endswith("\n"):
        raise ValidationError("text", "a note's text must end with a newline")
    blob = key_hash(name, key.public_key()).to_bytes(4, "big") + key.sign(text.encode())
    return f"{text}\n{_SIG_PREFIX}{name} {base64.b64encode(blob).decode()}\n"


def sign_checkpoint(cp: Checkpoint, key: Ed25519PrivateKey, name: str) -> str:
    """The signed note for ``cp``, signed by ``key`` under key name ``name``."""
    return sign_note(cp.body(), key, name)


def _malformed(why: str) -> VerificationError:
    return VerificationError(f"malformed checkpoint: {why}")


def _parse_signature(line: str) -> NoteSignature:
    if not line.startswith(_SIG_PREFIX):
        raise _malformed(f"signature line {line[:40]!r} does not start with '\u2014 '")
    name, _, b64 = line[len(_SIG_PREFIX) :].partition(" ")
    try:
        _check_name(name, "name")
        blob = base64.b64decode(b64, validate=True)
    except (ValidationError, binascii.Error, ValueError):
        raise _malformed(f"bad signature line {line[:60]!r}") from None
    if len(blob) < 5:
        raise _malformed(f"signature by {name} is too short")
    return NoteSignature(name, int.from_bytes(blob[:4], "big"), blob[4:])


def _parse_body(text: str) -> Checkpoint:
    lines = text.split("\n")[:-1]  # the text ends with "\n"
    if len(lines) < 3:
        raise _malformed("the body needs origin, size and root lines")
    origin, size, root, *extensions = lines
    if not size.isascii() or not size.isdigit() or (size != "0" and size.startswith("0")):
        raise _malformed(f"tree size {size!r} is not a canonical decimal number")
    try:
        root_hash = base64.b64decode(root, validate=True)
        return Checkpoint(origin, int(size), root_hash, tuple(extensions))
    except (binascii.Error, ValueError):
        raise _malformed(f"root {root!r} is not base64") from None
    except ValidationError as exc:
        why = "empty line in body" if exc.field == "extensions" else f"{exc.field} {exc.message}"
        raise _malformed(why) from None


def _split_note(text: str | bytes) -> tuple[str, list[NoteSignature]]:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed("not UTF-8") from None
    if any(c < " " and c != "\n" for c in text):
        raise _malformed("contains control characters (CR, tab ...)")
    # signed-note: the body ends at the last blank line; signatures follow it.
    split = text.rfind("\n\n")
    if split < 0 or not text.endswith("\n"):
        raise _malformed("no blank line between body and signatures, or no final newline")
    body, sig_block = text[: split + 1], text[split + 2 :]
    lines = sig_block.split("\n")[:-1]
    if not lines:
        raise _malformed("no signature lines")
    if len(lines) > _MAX_SIGNATURES:
        raise _malformed(f"more than {_MAX_SIGNATURES} signatures")
    return body, [_parse_signature(line) for line in lines]


def parse_checkpoint(text: str | bytes) -> tuple[Checkpoint, list[NoteSignature]]:
    """Split a signed checkpoint into its body and signatures, verifying nothing."""
    body, signatures = _split_note(text)
    return _parse_body(body), signatures


def verify_checkpoint(
    text: str | bytes,
    trusted_vkeys: Iterable[str | VerifierKey] | str,
    *,
    origin: str | None = None,
) -> Checkpoint:
    """The checkpoint, once a signature by one of ``trusted_vkeys`` checks out.

    Signatures by unknown keys are ignored (witnesses may cosign); one by a
    trusted key that does not verify fails the whole note.
    """
    if isinstance(trusted_vkeys, str):
        trusted_vkeys = [trusted_vkeys]
    keys = [k if isinstance(k, VerifierKey) else parse_vkey(k) for k in trusted_vkeys]
    if not keys:
        raise ValidationError("trusted_vkeys", "at least one trusted key is needed")
    text_body, signatures = _split_note(text)
    cp = _parse_body(text_body)
    body = text_body.encode()  # the signed bytes are the text as received
    verified = False
    for sig in signatures:
        for key in keys:
            if (key.name, key.key_hash) != (sig.name, sig.key_hash):
                continue
            try:
                key.public_key.verify(sig.signature, body)
            except InvalidSignature:
                raise VerificationError(f"bad signature on checkpoint by key {key.name}+{key.key_hash:08x}") from None
            verified = True
    if not verified:
        signers = ", ".join(f"{s.name}+{s.key_hash:08x}" for s in signatures)
        raise VerificationError(f"checkpoint is signed only by unknown keys: {signers}")
    if origin is not None and cp.origin != origin:
        raise VerificationError(f"checkpoint origin is {cp.origin!r}, expected {origin!r}")
    return cp

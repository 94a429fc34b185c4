"""Keys: the master key (a key file, an environment variable or AWS KMS), the HMAC key, and the
data keys of envelope encryption, kept wrapped in ``<output>/_keys/<key id>.json``.

A key reference names where a key is, never the key itself, so it may go into a spec, a job
graph or a log: ``file:PATH`` (a file holding the key as base64 text, e.g. from
``python -m beam_pipelines.pii keygen``), ``env:VAR`` (an environment variable holding the same
text) or, for the master key only, ``kms:KEY_ID`` (an AWS KMS key id, ARN or ``alias/...``; the
endpoint and credentials are boto3's own: ``AWS_ENDPOINT_URL``, ``AWS_REGION`` ...).

A data key is 32 random bytes (AES-256-GCM), made once per run and sink; what is stored is only
its wrapped form: AES-GCM under a local master key, or KMS ``Encrypt`` under a KMS key. A
rotation re-wraps the data keys under a new master key; the data they encrypted is untouched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
from datetime import datetime, timezone

from apache_beam.io.filesystems import FileSystems
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from beam_pipelines.errors import RunError
from transforms.sinks.files import join_path

__all__ = [
    "HMAC_ENV",
    "KEYS_DIR",
    "MASTER_ENV",
    "KeyUnavailable",
    "MasterKey",
    "hmac_key",
    "load_data_key",
    "master_key",
    "new_data_key",
    "read_manifest",
    "manifests",
    "rewrap",
]

MASTER_ENV = "BEAM_PIPELINES_PII_MASTER_KEY"  # a key reference: file:PATH, env:VAR or kms:KEY_ID
HMAC_ENV = "BEAM_PIPELINES_PII_HMAC_KEY"  # a key reference: file:PATH or env:VAR
KEYS_DIR = "_keys"
_LOCAL_AAD = b"beam_pipelines.pii data key"


class KeyUnavailable(RunError):
    """A key cannot be had or used; the message names the reference, never the key (a RunError:
    the launcher reports it as one ``error:`` line, exit status 1)."""


def _key_text(ref: str) -> bytes:
    kind, _, where = ref.partition(":")
    if kind == "file":
        try:
            with open(where, "rb") as fh:
                text = fh.read()
        except OSError as e:
            raise KeyUnavailable(f"cannot read the key file {where}: {e.strerror or e}") from None
    elif kind == "env":
        value = os.environ.get(where)
        if not value:
            raise KeyUnavailable(f"the environment variable {where} holding the key is not set")
        text = value.encode()
    else:
        raise KeyUnavailable(f"a key reference is file:PATH or env:VAR (kms:KEY_ID for a master key), got {kind!r}")
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyUnavailable(f"the key at {ref} is not base64 text") from None
    if len(key) != 32:
        raise KeyUnavailable(f"the key at {ref} is {len(key)} bytes; a key is 32 random bytes (keygen makes one)")
    return key


def _resolve(ref: str | None, env: str, what: str) -> str:
    ref = ref or os.environ.get(env)
    if not ref:
        raise KeyUnavailable(f"no {what}: give its reference (file:PATH, env:VAR{', kms:KEY_ID' if env == MASTER_ENV else ''}) "
                        f"in ${env} or the spec's pii section")  # fmt: skip
    return ref


def hmac_key(ref: str | None = None) -> bytes:
    """The HMAC key at ``ref`` (else at ``$BEAM_PIPELINES_PII_HMAC_KEY``'s reference)."""
    ref = _resolve(ref, HMAC_ENV, "HMAC key")
    if ref.startswith("kms:"):
        raise KeyUnavailable("the HMAC key is a key file or an environment variable, not a KMS key")
    return _key_text(ref)


class MasterKey:
    """Wraps and unwraps data keys.

    Args:
        ref: The key reference (``file:``, ``env:`` or ``kms:``).
    """

    def __init__(self, ref: str):
        self.ref = ref
        if ref.startswith("kms:"):
            self._kms_id, self._key = ref[4:], None
            if not self._kms_id:
                raise KeyUnavailable("kms: needs a key id, ARN or alias")
            self.id = "kms:" + self._kms_id
        else:
            self._kms_id, self._key = None, _key_text(ref)
            # A fingerprint names which local key wrapped a data key; it does not reveal the key.
            self.id = "local:" + hashlib.sha256(b"beam_pipelines.pii master\0" + self._key).hexdigest()[:16]

    def _kms(self):
        import boto3

        return boto3.client("kms")

    def wrap(self, data_key: bytes) -> dict:
        """The stored form of ``data_key`` under this master key."""
        if self._kms_id is not None:
            try:
                blob = self._kms().encrypt(KeyId=self._kms_id, Plaintext=data_key)["CiphertextBlob"]
            except Exception as e:  # noqa: BLE001 - botocore raises per-service error classes
                raise KeyUnavailable(f"KMS cannot wrap with {self._kms_id}: {_first_line(e)}") from None
            return {"master": self.id, "wrapped": base64.b64encode(blob).decode()}
        nonce = secrets.token_bytes(12)
        blob = nonce + AESGCM(self._key).encrypt(nonce, data_key, _LOCAL_AAD)
        return {"master": self.id, "wrapped": base64.b64encode(blob).decode()}

    def unwrap(self, stored: dict) -> bytes:
        """The data key of a stored form made by :meth:`wrap` under this master key."""
        # KMS knows which key wrapped a blob (an alias and an ARN name the same key): it decides.
        both_kms = self._kms_id is not None and str(stored.get("master", "")).startswith("kms:")
        if stored.get("master") != self.id and not both_kms:
            raise KeyUnavailable(f"data key {stored.get('key_id')} is wrapped by {stored.get('master')}, not by the master "
                            f"key given ({self.id})")  # fmt: skip
        blob = base64.b64decode(stored["wrapped"])
        if self._kms_id is not None:
            try:
                return self._kms().decrypt(CiphertextBlob=blob, KeyId=self._kms_id)["Plaintext"]
            except Exception as e:  # noqa: BLE001 - botocore raises per-service error classes
                raise KeyUnavailable(f"KMS cannot unwrap with {self._kms_id}: {_first_line(e)}") from None
        try:
            return AESGCM(self._key).decrypt(blob[:12], blob[12:], _LOCAL_AAD)
        except InvalidTag:
            raise KeyUnavailable(f"data key {stored.get('key_id')} does not open with the master key given") from None


def master_key(ref: str | None = None) -> MasterKey:
    """The master key at ``ref`` (else at ``$BEAM_PIPELINES_PII_MASTER_KEY``'s reference)."""
    return MasterKey(_resolve(ref, MASTER_ENV, "master key"))


def _first_line(e: Exception) -> str:
    # One line: botocore puts the service's message on a line of its own.
    return " ".join(str(e).split()) or type(e).__name__


def _manifest_path(keys_dir: str, key_id: str) -> str:
    return join_path(keys_dir, f"{key_id}.json")


def _write(path: str, doc: dict) -> None:
    data = json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"
    if "://" not in path:  # a local rename is atomic: a rotation cut off leaves the old form whole
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{secrets.token_hex(4)}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        return
    with FileSystems.create(path, mime_type="application/json") as fh:
        fh.write(data)


def new_data_key(master: MasterKey, keys_dir: str | None, target: str, when: datetime | None = None) -> dict:
    """Makes a data key, stores it wrapped under ``keys_dir`` (None: not stored) and returns the
    stored form (``key_id``, ``master``, ``wrapped``, ``target``, ``created``), never the key itself."""
    key_id = secrets.token_hex(8)
    stored = {"key_id": key_id, "target": target, "algorithm": "AES-256-GCM",
              "created": (when or datetime.now(timezone.utc)).isoformat(), **master.wrap(secrets.token_bytes(32))}  # fmt: skip
    if keys_dir is not None:
        _write(_manifest_path(keys_dir, key_id), stored)
    return stored


def read_manifest(keys_dir: str, key_id: str) -> dict:
    path = _manifest_path(keys_dir, key_id)
    try:
        with FileSystems.open(path) as fh:
            return json.loads(fh.read())
    except (OSError, ValueError) as e:
        raise KeyUnavailable(f"no data key {key_id} under {keys_dir} ({_first_line(e)})") from None


def load_data_key(master: MasterKey, stored: dict) -> bytes:
    return master.unwrap(stored)


def manifests(keys_dir: str) -> list[str]:
    """The stored data keys' files under ``keys_dir``, sorted."""
    try:
        matched = FileSystems.match([join_path(keys_dir, "*.json")])[0].metadata_list
    except Exception:  # noqa: BLE001 - a missing directory matches nothing on some filesystems
        return []
    return sorted(m.path for m in matched)


def rewrap(keys_dir: str, old: MasterKey, new: MasterKey) -> list[str]:
    """Re-wraps every data key under ``keys_dir`` from ``old`` to ``new``; returns the key ids
    re-wrapped (those already under ``new`` are left alone). Raises KeyUnavailable before writing
    anything when a data key does not open with ``old``."""
    plans = []
    for path in manifests(keys_dir):
        with FileSystems.open(path) as fh:
            stored = json.loads(fh.read())
        if stored.get("master") == new.id:
            continue
        plans.append((path, stored, old.unwrap(stored)))
    for path, stored, key in plans:
        _write(path, {**stored, **new.wrap(key)})
    return [s["key_id"] for _, s, _ in plans]

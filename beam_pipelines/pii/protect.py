"""Protecting Arrow columns: mask, token, encrypt, drop, and decrypt; ``Protect``, the composite a
sink's input goes through.

- mask: ``pyarrow.compute`` regexes per class (``j***@example.com``, ``A***``, ``***42``,
  ``10.1.2.0``, ``***``); a value not of the class's shape becomes ``***``.
- token: ``tok_`` + 32 hex digits of HMAC-SHA-256(key, class + NUL + value): the same value of
  the same class gives the same token in every run and table (joins still work), and without the
  key a token cannot be computed from a guess.
- encrypt: ``enc1.<data key id>.<base64url(nonce + AES-256-GCM ciphertext + tag)>``, the key id
  bound as associated data; ``decrypt_values`` reverses it given the data keys.
- drop: every value null (the column stays, so tables and sinks keep their schema).

Token and encrypt loop over the values in Python (HMAC and AES-GCM have no Arrow kernel); the
README gives what that costs per million values.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from hashlib import sha256

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from transforms.records import as_array

__all__ = ["ENC_PREFIX", "TOKEN_PREFIX", "Protect", "decrypt_values", "encrypt", "mask", "protect_table", "token"]

TOKEN_PREFIX = "tok_"
ENC_PREFIX = "enc1."
_STARS = "***"
# (pattern the value must match, replacement) per class; a value that does not match is all stars.
_MASKS = {
    "email": (r"^([^@\s])[^@]*(@[^@\s]+)$", r"\1***\2"),
    "name": (r"^(\w)[\s\S]*$", r"\1***"),
    "ip": (r"^(\d{1,3}\.\d{1,3}\.\d{1,3})\.\d{1,3}$", r"\1.0"),
}


def _strings(values) -> pa.Array:
    a = as_array(values)
    return a if pa.types.is_string(a.type) else a.cast(pa.string())


def mask(values, pii_class: str) -> pa.Array:
    """``values`` masked as their class is (vectorised; nulls stay null)."""
    a = _strings(values)
    stars = pa.scalar(_STARS, pa.string())
    if pii_class == "phone":  # the last two digits, as support desks read them back
        digits = pc.replace_substring_regex(a, r"\D", "")
        shown = pc.replace_substring_regex(digits, r"^\d*(\d\d)$", r"***\1")
        return pc.if_else(pc.match_substring_regex(digits, r"^\d{6,}$"), shown, stars)
    if pii_class == "ip" and len(a):
        v4 = pc.replace_substring_regex(a, _MASKS["ip"][0], _MASKS["ip"][1])
        # An IPv6 address keeps its /48 prefix (a site), the rest zeroed.
        v6 = pc.replace_substring_regex(a, r"^([0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}):.*$", r"\1::")
        is_v4 = pc.match_substring_regex(a, _MASKS["ip"][0])
        is_v6 = pc.match_substring_regex(a, r"^[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]*$")
        return pc.if_else(is_v4, v4, pc.if_else(is_v6, v6, stars))
    if pii_class in _MASKS:
        pattern, replacement = _MASKS[pii_class]
        shown = pc.replace_substring_regex(a, pattern, replacement)
        return pc.if_else(pc.match_substring_regex(a, pattern), shown, stars)
    return pc.if_else(pc.is_null(a), pa.scalar(None, pa.string()), stars)


def token(values, key: bytes, pii_class: str) -> pa.Array:
    """Deterministic keyed tokens of ``values`` (nulls stay null).

    Each distinct value of the batch is hashed once (a customer's email on each of their orders)."""
    encoded = pc.dictionary_encode(_strings(values))
    base = hmac.new(key, pii_class.encode() + b"\0", sha256)
    out = []
    for v in encoded.dictionary.to_pylist():
        h = base.copy()
        h.update(v.encode())
        out.append(TOKEN_PREFIX + h.hexdigest()[:32])
    return pc.take(pa.array(out, pa.string()), encoded.indices)


def encrypt(values, key: bytes, key_id: str) -> pa.Array:
    """``values`` encrypted under data key ``key`` (id ``key_id``), a fresh nonce each (nulls stay null)."""
    a = as_array(values)
    texts = a.to_pylist()
    aes, aad = AESGCM(key), key_id.encode()
    prefix = f"{ENC_PREFIX}{key_id}."
    nonces = secrets.token_bytes(12 * len(texts))  # one draw for the batch: 96 random bits a value
    out = []
    for i, v in enumerate(texts):
        if v is None:
            out.append(None)
            continue
        data = v if isinstance(v, bytes) else str(v).encode()
        nonce = nonces[12 * i : 12 * i + 12]
        out.append(prefix + base64.urlsafe_b64encode(nonce + aes.encrypt(nonce, data, aad)).decode())
    return pa.array(out, pa.string())


def key_ids(values) -> set[str]:
    """The data key ids the encrypted values among ``values`` name."""
    out = set()
    for v in _strings(values).to_pylist():
        if v is not None and v.startswith(ENC_PREFIX):
            out.add(v[len(ENC_PREFIX) :].split(".", 1)[0])
    return out


def decrypt_values(values, keys: dict[str, bytes]) -> pa.Array:
    """``values`` with each encrypted value decrypted by its data key in ``keys`` (key id -> key);
    other values as they are. ValueError when one does not open."""
    out = []
    ciphers = {k: AESGCM(v) for k, v in keys.items()}
    for v in _strings(values).to_pylist():
        if v is None or not v.startswith(ENC_PREFIX):
            out.append(v)
            continue
        key_id, _, body = v[len(ENC_PREFIX) :].partition(".")
        blob = base64.urlsafe_b64decode(body)
        try:
            out.append(ciphers[key_id].decrypt(blob[:12], blob[12:], key_id.encode()).decode("utf-8", "replace"))
        except (KeyError, InvalidTag):
            raise ValueError(f"a value encrypted under data key {key_id} does not open with the keys given") from None
    return pa.array(out, pa.string())


def _apply(values, action: str, pii_class: str, hmac_key: bytes | None, data_key: tuple | None) -> pa.Array:
    if action == "mask":
        return mask(values, pii_class)
    if action == "token":
        return token(values, hmac_key, pii_class)
    if action == "encrypt":
        return encrypt(values, data_key[1], data_key[0])
    if action == "drop":
        return pa.nulls(len(values), pa.string())
    raise ValueError(f"unknown action {action!r}")


def protect_table(table: pa.Table, columns: dict, hmac_key: bytes | None = None, data_key: tuple | None = None,
                  records: tuple[str, ...] = (), errors: tuple | None = None) -> pa.Table:  # fmt: skip
    """``table`` with its personal data protected.

    Args:
        table: Any Arrow table.
        columns: Column -> (action, class) for the protected columns (absent ones are skipped).
        hmac_key: The token key (needed when an action is token).
        data_key: ``(key id, key)`` (needed when an action is encrypt, and for ``records``).
        records: Columns holding whole record texts, encrypted whole (the dead letters' raw,
            bronze's raw lines).
        errors: ``(protected field names, error column)``: dead letters whose field is protected,
            or an expectation's, have their error text encrypted (it may quote the value).
    """
    names = table.column_names
    for name, (action, cls) in columns.items():
        if name in names:
            i = names.index(name)
            table = table.set_column(i, pa.field(name, pa.string()), _apply(table.column(name), action, cls,
                                                                            hmac_key, data_key))  # fmt: skip
    for name in records:
        if name in names:
            i = names.index(name)
            table = table.set_column(i, pa.field(name, pa.string()), encrypt(table.column(name), data_key[1],
                                                                             data_key[0]))  # fmt: skip
    if errors is not None and table.num_rows:
        protected, column = errors
        field = as_array(table.column("field"))
        hit = pc.fill_null(pc.is_in(field, pa.array(sorted(protected), pa.string())), False)
        hit = pc.or_(hit, pc.fill_null(pc.starts_with(as_array(table.column("reason")), "expectation:"), False))
        if hit.true_count:
            i = names.index(column)
            sealed = encrypt(table.column(column), data_key[1], data_key[0])
            table = table.set_column(
                i, table.schema.field(column), pc.if_else(hit, sealed, as_array(table.column(column)))
            )
    return table


class _ProtectFn(beam.DoFn):
    """Keys are read on the worker (``setup``) from their references: the job graph holds the
    references and the wrapped data key only."""

    def __init__(self, columns: dict, records: tuple, errors: tuple | None, hmac_ref: str | None,
                 master_ref: str | None, stored_key: dict | None):  # fmt: skip
        self._columns, self._records, self._errors = columns, records, errors
        self._hmac_ref, self._master_ref, self._stored = hmac_ref, master_ref, stored_key
        self._hmac = self._data_key = None

    def setup(self):
        from beam_pipelines.pii import keys

        actions = {a for a, _ in self._columns.values()}
        if "token" in actions:
            self._hmac = keys.hmac_key(self._hmac_ref)
        if self._stored is not None:
            self._data_key = (self._stored["key_id"], keys.master_key(self._master_ref).unwrap(self._stored))

    def process(self, table: pa.Table):
        yield protect_table(table, self._columns, self._hmac, self._data_key, self._records, self._errors)

    def display_data(self):
        return {"protected": ", ".join(f"{c}:{a}" for c, (a, _) in sorted(self._columns.items()))}


class Protect(beam.PTransform):
    """Protects the personal data of table elements before a sink writes them.

    Args:
        columns: Column -> (action, class), action one of mask, token, encrypt, drop.
        records: Columns holding whole record texts, encrypted whole.
        errors: Dead letters: ``(protected field names, error column)`` (see ``protect_table``).
        hmac_ref: The HMAC key's reference (``file:`` or ``env:``; None: the environment's).
        master_ref: The master key's reference (None: the environment's).
        stored_key: The wrapped data key (``keys.new_data_key``) when anything is encrypted.
    """

    def __init__(self, columns: dict, records: tuple = (), errors: tuple | None = None, hmac_ref: str | None = None,
                 master_ref: str | None = None, stored_key: dict | None = None, label: str | None = None):  # fmt: skip
        super().__init__(label)
        if any(a == "encrypt" for a, _ in columns.values()) or records or errors:
            if stored_key is None:
                raise ValueError("encrypting needs a stored data key (keys.new_data_key)")
        self._fn = _ProtectFn(dict(columns), tuple(records), errors, hmac_ref, master_ref, stored_key)

    def expand(self, pcoll):
        return pcoll | "Protect" >> beam.ParDo(self._fn).with_input_types(pa.Table).with_output_types(pa.Table)

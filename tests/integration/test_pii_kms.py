"""Envelope encryption with AWS KMS master keys, on moto's real server (scripts/moto.sh): data keys
wrapped and unwrapped by KMS, a rotation from one KMS key to another and from a key file to KMS
that re-wraps the data keys and leaves the encrypted data byte for byte as it was, and the
``rotate`` and ``decrypt`` commands against it."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_pipelines.pii import keys
from beam_pipelines.pii.__main__ import main as pii_main
from beam_pipelines.pii.protect import decrypt_values, encrypt


@pytest.fixture
def kms(kms_endpoint, monkeypatch):
    # moto takes any credentials; boto3 needs some, a region, and the endpoint (boto3 reads it itself).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", kms_endpoint)
    return boto3.client("kms")


def _kms_key(kms, alias: str) -> str:
    key_id = kms.create_key(Description="beam-pipelines pii test")["KeyMetadata"]["KeyId"]
    name = f"alias/{alias}-{secrets.token_hex(4)}"
    kms.create_alias(AliasName=name, TargetKeyId=key_id)
    return name


def test_kms_wraps_and_unwraps_data_keys_and_the_stored_form_is_not_the_key(kms, tmp_path):
    master = keys.master_key("kms:" + _kms_key(kms, "lake"))
    stored = keys.new_data_key(master, str(tmp_path / "_keys"), "Silver")
    clear = master.unwrap(stored)
    assert len(clear) == 32 and stored["master"] == master.id
    assert base64.b64encode(clear).decode() not in (tmp_path / "_keys" / f"{stored['key_id']}.json").read_text()
    # The wrapped key is KMS ciphertext: KMS itself opens it, and names the key that wrapped it.
    blob = base64.b64decode(stored["wrapped"])
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == clear


def test_a_missing_kms_key_is_one_clear_error(kms, tmp_path):
    with pytest.raises(keys.KeyUnavailable, match="KMS cannot wrap with alias/none"):
        keys.new_data_key(keys.master_key("kms:alias/none"), str(tmp_path / "_keys"), "x")


def _encrypted_output(tmp_path, master: keys.MasterKey) -> tuple[str, dict, bytes]:
    out = tmp_path / "out"
    stored = keys.new_data_key(master, str(out / "_keys"), "Silver")
    sealed = encrypt(pa.array(["ada@example.org", "bob@example.org"]), master.unwrap(stored), stored["key_id"])
    (out / "t").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["1", "2"], "email": sealed}), out / "t" / "part-0.parquet")
    return str(out), stored, (out / "t" / "part-0.parquet").read_bytes()


@pytest.mark.parametrize("start", ["kms", "file"])
def test_rotation_rewraps_the_data_keys_and_leaves_the_data_as_it_was(kms, tmp_path, start, capsys):
    if start == "kms":
        old_ref = "kms:" + _kms_key(kms, "old")
    else:
        (tmp_path / "old.key").write_text(base64.b64encode(secrets.token_bytes(32)).decode())
        old_ref = f"file:{tmp_path / 'old.key'}"
    new_ref = "kms:" + _kms_key(kms, "new")
    old, new = keys.master_key(old_ref), keys.master_key(new_ref)
    out, stored, data_before = _encrypted_output(tmp_path, old)
    clear = old.unwrap(stored)
    assert pii_main(["rotate", f"--output={out}", f"--from_key={old_ref}", f"--to_key={new_ref}"]) == 0
    assert "re-wrapped 1 data key(s)" in capsys.readouterr().out
    data_after = (tmp_path / "out" / "t" / "part-0.parquet").read_bytes()
    assert hashlib.sha256(data_after).digest() == hashlib.sha256(data_before).digest()
    rewrapped = keys.read_manifest(f"{out}/_keys", stored["key_id"])
    assert rewrapped["master"] == new.id and rewrapped["wrapped"] != stored["wrapped"]
    assert new.unwrap(rewrapped) == clear
    with pytest.raises(keys.KeyUnavailable):
        old.unwrap(rewrapped)
    # The data decrypts with the new master key, through the command that needs it.
    assert pii_main(["decrypt", f"--output={out}", "--path=t", f"--master_key={new_ref}", "--columns=email",
                     f"--to={tmp_path / 'clear.jsonl'}"]) == 0  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "clear.jsonl").read_text().splitlines()]
    assert sorted(r["email"] for r in rows) == ["ada@example.org", "bob@example.org"]
    # ... and no longer with the old one: one error line, exit status 1.
    assert pii_main(["decrypt", f"--output={out}", "--path=t", f"--master_key={old_ref}"]) == 1
    err = capsys.readouterr().err
    why = "KMS cannot unwrap with alias/old" if start == "kms" else "wrapped by kms:alias/new"
    assert err.startswith("error: ") and why in err and err.count("\n") == 1
    log = [json.loads(line) for line in (tmp_path / "out" / "_audit" / "log.jsonl").read_text().splitlines()]
    assert [(e["action"], e["outcome"]) for e in log] == [
        ("rotate", "done"),
        ("decrypt", "done"),
        ("decrypt", "failed"),
    ]
    assert log[0]["what"]["data_keys"] == [stored["key_id"]] and log[0]["what"]["to"] == new.id


def test_decrypted_values_equal_the_input_after_a_kms_round_trip(kms):
    master = keys.master_key("kms:" + _kms_key(kms, "rt"))
    data_key = master.unwrap(master.wrap(b"k" * 32) | {"key_id": "x"})
    values = pa.array(["Ada Lovelace", None, "12 Baker Street"])
    assert decrypt_values(encrypt(values, data_key, "x"), {"x": data_key}).equals(values)

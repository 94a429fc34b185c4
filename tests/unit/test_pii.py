"""PII protection's parts: the column actions, local master keys and re-wrapping, the policy a spec
declares (lookup order and what it refuses), dead letters, the report, the job graph and the CLI's
errors. KMS is tested on moto's server (tests/integration/test_pii_kms.py); a whole run in
tests/e2e/test_pii.py."""

from __future__ import annotations

import base64
import io
import json
import pickle
import re
import secrets
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines.contracts.checks import ContractError
from beam_pipelines.contracts.loader import contract_from_doc
from beam_pipelines.pii import keys
from beam_pipelines.pii.__main__ import main as pii_main
from beam_pipelines.pii.policy import CLASS_DEFAULTS
from beam_pipelines.pii.protect import Protect, decrypt_values, encrypt, key_ids, mask, protect_table, token
from beam_pipelines.pii.wiring import PROTECTED, redact_report, redact_window_results
from beam_pipelines.spec.compile import compile_spec
from beam_pipelines.spec.config import EventsConfig
from beam_pipelines.spec.yamlsrc import SpecError, load
from transforms.records import dead_letters

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "examples" / "pii" / "signups.yaml"


def _key_file(path: Path) -> str:
    path.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    return f"file:{path}"


# ---------------------------------------------------------------- actions on columns


def test_masks_keep_the_shape_of_each_class_and_star_what_does_not_fit():
    def m(values, cls):
        return mask(pa.array(values, pa.string()), cls).to_pylist()

    assert m(["ada.lovelace@example.org", "not an email", None], "email") == ["a***@example.org", "***", None]
    assert m(["Ada Lovelace", ""], "name") == ["A***", "***"]
    assert m(["+44 20 7946 0958", "12"], "phone") == ["***58", "***"]
    assert m(["10.1.2.3", "2001:db8:85a3:1::7", "localhost"], "ip") == ["10.1.2.0", "2001:db8:85a3::", "***"]
    assert m(["12 Baker Street", None], "address") == ["***", None]
    assert m(["call me at home"], "free_text") == ["***"]


def test_tokens_are_deterministic_keyed_and_per_class():
    key, other = secrets.token_bytes(32), secrets.token_bytes(32)
    a = pa.array(["ada@example.org", "bob@example.org", "ada@example.org", None])
    t = token(a, key, "email").to_pylist()
    assert t[0] == t[2] != t[1] and t[3] is None
    assert all(x.startswith("tok_") and len(x) == 36 and "ada" not in x for x in t[:3])
    assert token(a, key, "email").equals(token(a, key, "email"))  # the same in every run
    assert token(a, other, "email").to_pylist()[0] != t[0]  # keyed: no guess without the key
    assert token(a, key, "name").to_pylist()[0] != t[0]  # a class is its own domain


def test_encryption_round_trips_with_a_fresh_nonce_each_value_and_refuses_another_key():
    key = secrets.token_bytes(32)
    a = pa.array(["ada@example.org", "ada@example.org", None, "Zoë 🙂"])
    sealed = encrypt(a, key, "k1")
    s = sealed.to_pylist()
    assert s[0] != s[1] and s[2] is None and all(x.startswith("enc1.k1.") for x in (s[0], s[1], s[3]))
    assert key_ids(sealed) == {"k1"}
    assert decrypt_values(sealed, {"k1": key}).equals(a)
    with pytest.raises(ValueError, match="data key k1 does not open"):
        decrypt_values(sealed, {"k1": secrets.token_bytes(32)})
    # The key id is bound to the ciphertext: a value moved under another id does not open.
    moved = pa.array([s[0].replace("enc1.k1.", "enc1.k2.")])
    with pytest.raises(ValueError):
        decrypt_values(moved, {"k2": key})


def test_dead_letters_have_the_raw_record_and_the_errors_that_quote_a_protected_value_encrypted():
    key = ("k9", secrets.token_bytes(32))
    raw = pa.array(['{"email": "ada@example.org", "country": "xx"}', '{"email": "bad one", "country": "de"}',
                    '{"email": "c@example.org", "country": "zz"}'])  # fmt: skip
    dl = pa.concat_tables([
        dead_letters("validate", "invalid_value", "country", "country not one of ..., got xx", raw[:1], pa.array(["f"])),
        dead_letters("quality", "expectation:email_shape", "email", "email 'bad one' does not match", raw[1:2],
                     pa.array(["f"])),
        dead_letters("validate", "invalid_value", "country", "country not one of ..., got zz", raw[2:], pa.array(["f"])),
    ])  # fmt: skip
    out = protect_table(dl, {}, None, key, records=("raw",), errors=(("email",), "error"))
    assert out.schema == dl.schema
    assert all(r.startswith("enc1.k9.") for r in out.column("raw").to_pylist())
    errors = out.column("error").to_pylist()
    assert errors[0] == "country not one of ..., got xx" and errors[1].startswith("enc1.k9.")
    assert decrypt_values(out.column("raw"), {"k9": key[1]}).equals(raw)
    assert decrypt_values(out.column("error"), {"k9": key[1]}).to_pylist()[1] == "email 'bad one' does not match"


def test_protect_table_drops_to_nulls_and_leaves_other_columns_alone():
    t = pa.table({"id": ["1", "2"], "note": ["hi there", None], "n": [1, 2]})
    out = protect_table(t, {"note": ("drop", "free_text"), "absent": ("mask", "name")})
    assert out.column("note").null_count == 2 and out.column("id").equals(t.column("id"))
    assert out.schema.names == t.schema.names


def test_the_job_graph_holds_key_references_and_the_wrapped_data_key_never_a_key(tmp_path, monkeypatch):
    master_ref, hmac_ref = _key_file(tmp_path / "m.key"), _key_file(tmp_path / "h.key")
    master = keys.master_key(master_ref)
    stored = keys.new_data_key(master, str(tmp_path / "_keys"), "Silver")
    data_key = master.unwrap(stored)
    guard = Protect({"email": ("token", "email"), "name": ("encrypt", "name")}, hmac_ref=hmac_ref,
                    master_ref=master_ref, stored_key=stored)  # fmt: skip
    graph = pickle.dumps(guard._fn)
    for secret in (data_key, keys.hmac_key(hmac_ref), master._key):
        assert secret not in graph and base64.b64encode(secret) not in graph
    with beam.Pipeline() as p:
        out = (
            p
            | beam.Create([pa.table({"email": ["ada@example.org"], "name": ["Ada"]})])
            | guard
            | beam.Map(
                lambda t: (
                    t.column("email")[0].as_py()[:4],
                    decrypt_values(t.column("name"), {stored["key_id"]: data_key})[0].as_py(),
                )
            )  # fmt: skip
        )
        assert_that(out, equal_to([("tok_", "Ada")]))


# ---------------------------------------------------------------- keys


def test_local_master_keys_wrap_unwrap_and_rewrap_without_touching_data(tmp_path):
    old, new = keys.master_key(_key_file(tmp_path / "old.key")), keys.master_key(_key_file(tmp_path / "new.key"))
    keys_dir = str(tmp_path / "_keys")
    stored = [keys.new_data_key(old, keys_dir, t) for t in ("Bronze", "Silver")]
    clear = [old.unwrap(s) for s in stored]
    sealed = encrypt(pa.array(["ada@example.org"]), clear[1], stored[1]["key_id"])
    files = sorted((tmp_path / "_keys").glob("*.json"))
    assert len(files) == 2 and all(base64.b64encode(k).decode() not in f.read_text() for f in files for k in clear)
    assert sorted(keys.rewrap(keys_dir, old, new)) == sorted(s["key_id"] for s in stored)
    assert keys.rewrap(keys_dir, old, new) == []  # already under the new key: nothing to do
    again = keys.read_manifest(keys_dir, stored[1]["key_id"])
    assert again["master"] == new.id and new.unwrap(again) == clear[1]
    assert decrypt_values(sealed, {again["key_id"]: new.unwrap(again)}).to_pylist() == ["ada@example.org"]
    with pytest.raises(keys.KeyUnavailable, match="wrapped by"):
        old.unwrap(again)


def test_key_references_fail_with_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.delenv(keys.MASTER_ENV, raising=False)
    monkeypatch.delenv(keys.HMAC_ENV, raising=False)
    with pytest.raises(keys.KeyUnavailable, match="no master key"):
        keys.master_key()
    with pytest.raises(keys.KeyUnavailable, match="cannot read the key file"):
        keys.master_key(f"file:{tmp_path}/none.key")
    (tmp_path / "short.key").write_text(base64.b64encode(b"x" * 16).decode())
    with pytest.raises(keys.KeyUnavailable, match="16 bytes"):
        keys.hmac_key(f"file:{tmp_path}/short.key")
    with pytest.raises(keys.KeyUnavailable, match="LAKE_HMAC.*not set"):
        keys.hmac_key("env:LAKE_HMAC")
    monkeypatch.setenv("LAKE_HMAC", base64.b64encode(b"k" * 32).decode())
    assert keys.hmac_key("env:LAKE_HMAC") == b"k" * 32
    with pytest.raises(keys.KeyUnavailable, match="not a KMS key"):
        keys.hmac_key("kms:alias/x")
    other = keys.master_key(_key_file(tmp_path / "other.key"))
    stored = keys.new_data_key(keys.master_key(_key_file(tmp_path / "m.key")), str(tmp_path / "_keys"), "x")
    with pytest.raises(keys.KeyUnavailable, match="not by the master key given"):
        other.unwrap(stored)


# ---------------------------------------------------------------- the policy in a spec


def _plan(doc_edit=None, tmp_path=None):
    doc = load(str(SPEC))
    if doc_edit:
        doc_edit(doc["pipeline"])
    cfg = EventsConfig(input="in/*.jsonl", input_format="jsonl", output=str(tmp_path or "out"))
    return compile_spec(doc, cfg, str(SPEC))


def test_the_most_specific_target_wins_and_classes_default():
    plan = _plan()
    p = plan.pii
    sinks = {n.step.name: n.step for n in plan.sinks}
    from beam_pipelines.pii.policy import targets_of

    assert targets_of(sinks["Silver"]) == ("Silver", "silver", "curated")
    assert p.action("email", targets_of(sinks["Silver"])) == "token"  # layer
    assert p.action("full_name", targets_of(sinks["Silver"])) == "encrypt"
    assert p.action("full_name", targets_of(sinks["WriteCurated"])) == "mask"  # default
    assert p.action("email", targets_of(sinks["Gold"])) == "drop"
    assert p.action("email", targets_of(sinks["Bronze"]), record=True) == "encrypt"  # record texts: encrypt
    assert p.record_action(targets_of(sinks["WriteDeadLetters"])) == "encrypt"
    bare = _plan(lambda pipe: pipe.pop("pii")).pii
    assert {f: bare.action(f, ("curated",)) for f in bare.fields} == {
        f: CLASS_DEFAULTS[c] for f, c in bare.fields.items()
    }
    # A field's own entry wins over its class's, the step's name over its layer.
    own = _plan(lambda pipe: pipe["pii"]["actions"].update({"free_text": {"default": "drop"},
                                                           "note": {"WriteCurated": "token", "curated": "mask"}})).pii  # fmt: skip
    assert own.action("note", targets_of(sinks["WriteCurated"])) == "token"
    assert own.action("note", targets_of(sinks["Silver"])) == "mask"


def test_spec_check_prints_what_each_sink_keeps():
    from beam_pipelines.spec.__main__ import check

    out = io.StringIO()
    assert check(str(SPEC), "batch", out) == 0
    lines = [line.strip() for line in out.getvalue().splitlines() if line.strip().startswith("pii ")]
    assert "pii Silver: email token, full_name encrypt, phone encrypt, address encrypt, ip mask, note drop" in lines
    assert "pii Bronze: record text encrypt" in lines and "pii WriteDeadLetters: record text encrypt" in lines
    assert lines[-1] == "pii profile: email token, full_name mask, phone mask, address drop, ip mask, note drop"


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        ({"email": {"bronze": "token"}}, r"pii\.actions\.email\.bronze: bronze holds whole record texts"),
        ({"email": {"WriteDeadLetters": "mask"}}, r"WriteDeadLetters holds whole record texts"),
        ({"emial": {"default": "mask"}}, r"'emial' is neither a field with pii nor a PII class \(did you mean 'email'"),
        ({"email": {"silvre": "mask"}}, r"unknown target 'silvre' \(did you mean 'silver'"),
        ({"email": {"profile": "encrypt"}}, r"a profile of encrypted values says nothing"),
        ({"email": {"default": "hash"}}, r"pii\.actions\.email\.default"),
    ],
)
def test_a_policy_mistake_is_one_spec_error_naming_its_place(actions, message):
    with pytest.raises(SpecError, match=message):
        _plan(lambda pipe: pipe["pii"].update({"actions": actions}))


def test_silver_merges_on_its_key_so_the_key_takes_keep_or_token_only(tmp_path):
    def edit(pipe):
        pipe["contract"] = "signups@1"
        pipe["pii"]["actions"]["email"] = {"silver": "encrypt"}
        for t in pipe["transforms"]:
            if t["name"] == "LatestVersion":
                t["config"]["key"] = "email"

    with pytest.raises(SpecError, match="silver merges on 'email': keep it or token it"):
        _plan(edit)


def test_a_pii_class_goes_on_string_fields_only_and_a_pii_section_needs_pii_fields():
    doc = {"name": "c", "version": 1, "fields": [{"name": "id", "type": "id"}, {"name": "n", "type": "long",
                                                                               "pii": "phone"}]}  # fmt: skip
    with pytest.raises(ContractError, match=r"fields\[1\]\.pii: pii applies to id and string fields only, not long"):
        contract_from_doc(doc)
    doc["fields"][1] = {"name": "n", "type": "string", "pii": "passport"}
    with pytest.raises(ContractError, match=r"fields\[1\]\.pii"):
        contract_from_doc(doc)
    orders = load(str(ROOT / "examples" / "lakehouse" / "orders.yaml"))
    orders["pipeline"]["pii"] = {"actions": {"email": {"default": "mask"}}}
    cfg = EventsConfig(input="in/*.jsonl", input_format="jsonl", output="out")
    with pytest.raises(SpecError, match="the contract orders has no field with pii"):
        compile_spec(orders, cfg, str(ROOT / "examples" / "lakehouse" / "orders.yaml"))


def test_the_report_shows_no_sample_of_a_protected_field():
    report = {"expectations": [
        {"name": "email_shape", "column": "email", "samples": ["bad one", "also bad"]},
        {"name": "amount_positive", "column": "amount", "samples": [-1]},
        {"name": "expr", "column": None, "samples": [{"email": "x y", "amount": 3}]},
    ]}  # fmt: skip
    out = redact_report(report, ("email",))["expectations"]
    assert out[0]["samples"] == [PROTECTED, PROTECTED] and out[1]["samples"] == [-1]
    assert out[2]["samples"] == [{"email": PROTECTED, "amount": 3}]
    window = {"window_start": "2026-05-01T00:00:00Z", "results": [{"column": "email", "samples": ["x y"]}]}
    assert redact_window_results(window, ("email",))["results"][0]["samples"] == [PROTECTED]


# ---------------------------------------------------------------- the command line


def test_commands_without_their_key_say_so_on_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(keys.MASTER_ENV, raising=False)
    assert pii_main(["decrypt", f"--output={tmp_path}", "--path=lakehouse/silver"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no master key") and err.count("\n") == 1
    assert pii_main(["rotate", f"--output={tmp_path}", f"--to_key=file:{tmp_path}/none.key"]) == 1
    assert capsys.readouterr().err.startswith("error: ")
    assert pii_main(["keygen", f"--to={tmp_path}/k"]) == 0 and len(base64.b64decode((tmp_path / "k").read_text())) == 32
    assert (tmp_path / "k").stat().st_mode & 0o077 == 0
    assert pii_main(["keygen", f"--to={tmp_path}/k"]) == 1  # never overwrites a key
    assert "exists" in capsys.readouterr().err


def test_the_spec_schema_publishes_the_pii_section():
    schema = json.loads((ROOT / "templates" / "spec.schema.json").read_text())
    assert "pii" in json.dumps(schema)


def test_the_whole_pipelines_job_graph_and_display_data_hold_no_key(tmp_path, monkeypatch):
    master_ref, hmac_ref = _key_file(tmp_path / "m.key"), _key_file(tmp_path / "h.key")
    monkeypatch.setenv(keys.MASTER_ENV, master_ref)
    monkeypatch.setenv(keys.HMAC_ENV, hmac_ref)
    from beam_pipelines.spec.build import build, file_io

    cfg = EventsConfig(input=str(ROOT / "examples" / "pii" / "signups.jsonl"), input_format="jsonl",
                       output=str(tmp_path / "out"), pipeline=str(SPEC))  # fmt: skip
    plan = compile_spec(load(str(SPEC)), cfg, str(SPEC))
    p = beam.Pipeline()
    build(p, cfg, file_io(cfg, str(tmp_path / "out" / "_staging" / "r"), plan), plan)
    graph = _unpacked(p.to_runner_api().SerializeToString())
    master = keys.master_key(master_ref)
    stored = [json.loads(f.read_text()) for f in (tmp_path / "out" / "_keys").glob("*.json")]
    assert sorted(s["target"] for s in stored) == ["Bronze", "Silver", "WriteDeadLetters"]
    # The graph does hold the wrapped data keys and the key references (what the workers need) ...
    assert all(s["wrapped"].encode() in graph for s in stored) and master_ref.encode() in graph
    assert b"ProtectProfiled" in graph and b"SilverProtect" in graph
    # ... and no key in any form.
    for secret in [master._key, keys.hmac_key(hmac_ref), *(master.unwrap(s) for s in stored)]:
        for form in (secret, base64.b64encode(secret), base64.urlsafe_b64encode(secret), secret.hex().encode()):
            assert form not in graph


def _unpacked(graph: bytes) -> bytes:
    """The graph with every pickled payload (base64 of bz2 or zlib, as Beam stores DoFns) appended decoded."""
    import bz2
    import zlib

    out = [graph]
    for blob in re.findall(rb"[A-Za-z0-9+/]{64,}={0,2}", graph):
        try:
            raw = base64.b64decode(blob)
        except ValueError:
            continue
        for unpack in (bz2.decompress, zlib.decompress):
            try:
                out.append(unpack(raw))
            except (OSError, ValueError, zlib.error):
                continue
    return b"\n".join(out)


def test_schemas_show_names_each_fields_pii_class(capsys):
    from beam_pipelines.schemas import main as schemas_main

    assert schemas_main(["show", str(ROOT / "examples" / "pii" / "schemas" / "signups" / "v1.yaml")]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:] if line.strip()}
    assert rows["email"].endswith("pii email") and rows["note"].endswith("pii free_text")
    assert "pii" not in rows["country"]


def test_in_streaming_the_profile_checks_and_sinks_see_protected_records_only(tmp_path, monkeypatch):
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.pipeline import PipelineVisitor

    from beam_pipelines.spec.build import build, stream_io

    monkeypatch.setenv(keys.MASTER_ENV, _key_file(tmp_path / "m.key"))
    monkeypatch.setenv(keys.HMAC_ENV, _key_file(tmp_path / "h.key"))
    doc = load(str(SPEC))
    steps = doc["pipeline"]["transforms"]
    steps[0]["mode"] = "batch"
    steps.insert(1, {"name": "ReadStream", "type": "ReadKafka", "mode": "streaming",
                     "config": {"bootstrap": "127.0.0.1:1", "topic": "signups"}})  # fmt: skip
    for t in steps:
        if t["type"] == "WriteLakehouse":
            t["mode"] = "batch"
        if t["type"] == "Deduplicate":  # a stream keeps a key's first record
            t["config"] = {"key": "signup_id"}
    cfg = EventsConfig(input=None, input_format="jsonl", output=str(tmp_path / "out"), streaming=True,
                       kafka_bootstrap="127.0.0.1:1", kafka_topic="signups", pg_dsn="postgresql://x@h/d")  # fmt: skip
    plan = compile_spec(doc, cfg, str(SPEC))
    p = beam.Pipeline(options=PipelineOptions(["--streaming"]))
    build(p, cfg, stream_io(cfg, str(tmp_path / "out" / "_s"), plan), plan)

    class _Inputs(PipelineVisitor):
        def __init__(self):
            self.of = {}

        def visit_transform(self, node):
            self.of[node.full_label] = [pc.producer.full_label for pc in node.inputs if getattr(pc, "producer", None)]

        enter_composite_transform = visit_transform

    graph = _Inputs()
    p.visit(graph)
    # The profile reads the curated records after the streaming latency path's fusion break.
    assert graph.of["OffLatencyPath"] == ["Curated"]
    assert [label.split("/")[0] for label in graph.of["ProtectProfiled"]] == ["OffLatencyPath"]
    assert graph.of["WindowCurated"] == ["ProtectProfiled/Protect"]  # the windows hold protected rows
    assert graph.of["WriteChecks"] == ["ProtectChecks"]
    for sink in ("WriteCurated", "WriteAggregates", "WriteDeadLetters"):
        assert graph.of[sink] == [f"{sink}Protect/Protect"]

"""The audit log: the hash chain, what verify detects (and what it cannot without a kept head),
appends from concurrent processes, the injected clock, secrets kept out, and the recorder."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import multiprocessing
import os
from datetime import datetime, timedelta, timezone

import pytest

from beam_pipelines import audit_log
from beam_pipelines.audit_log import GENESIS, AuditError, AuditLog, Recorder, Redactor, verify
from beam_pipelines.errors import RunError

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
WHO = {"user": "alice", "os_user": "svc", "host": "h1"}


def ticking(start=T0, step=timedelta(seconds=1)):
    now = [start - step]

    def clock():
        now[0] += step
        return now[0]

    return clock


def filled(path, n=4) -> AuditLog:
    log = AuditLog(str(path), clock=ticking())
    for i in range(n):
        log.append("run", "published", {"run_id": f"r{i}", "counts": {"read": 10 * i}}, WHO)
    return log


def lines(path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def error_of(data: bytes, head: str | None = None) -> str | None:
    return verify(data, head).error


def test_entries_are_chained_with_the_injected_clock(tmp_path):
    path = tmp_path / "_audit" / "log.jsonl"
    filled(path, 3)
    entries = [json.loads(line) for line in lines(path)]
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert [e["time"] for e in entries] == [
        "2026-03-01T12:00:00.000+00:00",
        "2026-03-01T12:00:01.000+00:00",
        "2026-03-01T12:00:02.000+00:00",
    ]
    assert entries[0]["prev"] == GENESIS
    for before, entry in zip(entries, entries[1:]):
        assert entry["prev"] == before["hash"]
    for entry in entries:  # sha256 over the canonical JSON of the entry without its hash
        body = {k: v for k, v in entry.items() if k != "hash"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert entry["hash"] == hashlib.sha256(canonical).hexdigest()
        assert entry["who"] == WHO and entry["action"] == "run" and entry["outcome"] == "published"
    assert list(entries[0]) == ["seq", "time", "who", "action", "outcome", "what", "prev", "hash"]
    found = verify(path.read_bytes())
    assert found.error is None and found.entries == 3 and found.last["hash"] == entries[-1]["hash"]


def test_the_clock_must_be_timezone_aware(tmp_path):
    log = AuditLog(str(tmp_path / "log.jsonl"), clock=lambda: datetime(2026, 3, 1, 12, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        log.append("run", "started", {}, WHO)
    other = AuditLog(
        str(tmp_path / "log2.jsonl"), clock=lambda: datetime(2026, 3, 1, 14, tzinfo=timezone(timedelta(hours=2)))
    )
    assert other.append("run", "started", {}, WHO)["time"] == "2026-03-01T12:00:00.000+00:00"  # kept in UTC


def test_action_and_outcome_are_words(tmp_path):
    log = AuditLog(str(tmp_path / "log.jsonl"))
    with pytest.raises(ValueError):
        log.append("Run now", "ok", {}, WHO)


def test_every_single_byte_edit_is_detected(tmp_path):
    path = tmp_path / "log.jsonl"
    filled(path, 3)
    data = path.read_bytes()
    assert error_of(data) is None
    for i in range(len(data)):
        for replacement in (b"x", b"0", b" "):
            if data[i : i + 1] == replacement:
                continue
            edited = data[:i] + replacement + data[i + 1 :]
            assert error_of(edited) is not None, (i, edited[max(0, i - 20) : i + 20])


def _forged(entry: dict, **changes) -> bytes:
    """An entry changed and re-hashed, as someone who knows the format would forge it."""
    forged = {**entry, **changes}
    forged["hash"] = audit_log.entry_hash(forged)
    return audit_log.line_of(forged)


@pytest.mark.parametrize(
    "tamper, words",
    [
        (lambda ls: ls[:1] + ls[2:], "line 2 (seq 3): it has seq 3 where 2 was due"),  # a middle entry deleted
        (lambda ls: ls[1:], "line 1 (seq 2): it has seq 2 where 1 was due"),  # the first entry deleted
        (lambda ls: [ls[0], ls[2], ls[1], ls[3]], "line 2 (seq 3): it has seq 3 where 2 was due"),  # reordered
        (lambda ls: ls[:2] + [ls[1]] + ls[2:], "line 3 (seq 2): it has seq 2 where 3 was due"),  # duplicated
        (lambda ls: ls[:-1] + [ls[-1][:40]], "line 4 (seq 4): it is cut off (no line end)"),  # torn tail
        (lambda ls: [ls[0].replace(b'"read":0', b'"read":9')] + ls[1:], "line 1 (seq 1): its hash does not match"),
        (lambda ls: [ls[0].replace(b",", b", ", 1)] + ls[1:], "its bytes are not those it was written with"),
        (lambda ls: [b"{}\n"] + ls[1:], "line 1: it does not have the fields of an entry"),
        (lambda ls: [b"not json\n"] + ls[1:], "line 1: it is not a JSON entry"),
    ],
)
def test_tampering_names_the_first_bad_entry(tmp_path, tamper, words):
    path = tmp_path / "log.jsonl"
    filled(path, 4)
    data = b"".join(tamper(lines(path)))
    error = error_of(data)
    assert error is not None and words in error, error


def test_a_forged_entry_inserted_or_an_entry_rehashed_breaks_the_chain_after_it(tmp_path):
    path = tmp_path / "log.jsonl"
    filled(path, 4)
    ls = lines(path)
    second = json.loads(ls[1])
    rehashed = _forged(second, what={"run_id": "r1", "counts": {"read": 999}})  # edited, its own hash fixed up
    assert "line 3 (seq 3): its prev is not the hash of the entry before it" in error_of(
        b"".join([ls[0], rehashed, *ls[2:]])
    )
    inserted = _forged(second, seq=3, prev=second["hash"], what={"run_id": "forged"})
    assert "line 4 (seq 3): it has seq 3 where 4 was due" in error_of(b"".join([*ls[:2], inserted, *ls[2:]]))


def test_what_only_a_kept_head_detects(tmp_path):
    # A tail cut at a line end, or the log rewritten from an entry on with every later hash
    # recomputed, leaves a valid chain: the head hash kept elsewhere shows it.
    path = tmp_path / "log.jsonl"
    filled(path, 4)
    ls = lines(path)
    head = json.loads(ls[-1])["hash"]
    assert verify(path.read_bytes(), head).head_seq == 4
    truncated = b"".join(ls[:3])
    assert error_of(truncated) is None
    assert "the recorded head" in error_of(truncated, head) and "is not in the log" in error_of(truncated, head)
    rewritten, prev = list(ls[:2]), json.loads(ls[1])["hash"]
    for line in ls[2:]:
        entry = json.loads(line)
        if entry["seq"] == 3:
            entry["what"] = {"run_id": "r2", "counts": {"read": 0}}
        fixed = _forged(entry, prev=prev)
        rewritten.append(fixed)
        prev = json.loads(fixed)["hash"]
    assert error_of(b"".join(rewritten)) is None
    assert "is not in the log" in error_of(b"".join(rewritten), head)
    # An older head is still found after later appends: the log only grew since.
    old_head = json.loads(ls[1])["hash"]
    assert verify(path.read_bytes(), old_head).head_seq == 2


def test_a_damaged_last_entry_takes_no_more_entries(tmp_path):
    path = tmp_path / "log.jsonl"
    log = filled(path, 2)
    path.write_bytes(path.read_bytes()[:-10])  # a torn last line
    with pytest.raises(AuditError, match="its last entry is damaged .*cut off.*verify --log="):
        log.append("run", "started", {}, WHO)
    path.write_bytes(b"".join(lines(path)[:1]) + lines(path)[0].replace(b'"r0"', b'"r9"'))
    with pytest.raises(AuditError, match="hash does not match"):
        log.append("run", "started", {}, WHO)


def test_a_failed_write_leaves_the_log_whole(tmp_path, monkeypatch):
    path = tmp_path / "log.jsonl"
    log = filled(path, 2)
    before = path.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(audit_log.os, "write", half_then_full)
    with pytest.raises(AuditError, match="No space left on device"):
        log.append("run", "started", {"run_id": "r9"}, WHO)
    monkeypatch.undo()
    assert path.read_bytes() == before
    log.append("run", "started", {"run_id": "r9"}, WHO)
    assert verify(path.read_bytes()).entries == 3


def _append_many(path: str, worker: int, n: int, barrier) -> None:
    log = AuditLog(path)
    barrier.wait()  # all at once
    for i in range(n):
        log.append("run", "published", {"worker": worker, "i": i}, WHO)


def test_concurrent_appends_from_several_processes_keep_one_chain(tmp_path):
    path = str(tmp_path / "_audit" / "log.jsonl")
    workers, each = 4, 30
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers)
    procs = [ctx.Process(target=_append_many, args=(path, w, each, barrier)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    data = open(path, "rb").read()
    found = verify(data)
    assert found.error is None and found.entries == workers * each
    entries = [json.loads(line) for line in data.splitlines()]
    assert sorted((e["what"]["worker"], e["what"]["i"]) for e in entries) == [
        (w, i) for w in range(workers) for i in range(each)
    ]
    for w in range(workers):  # each process's entries in its own order
        assert [e["what"]["i"] for e in entries if e["what"]["worker"] == w] == list(range(each))


def test_secrets_are_kept_out():
    r = Redactor()
    args = r.args([
        "--pg_dsn=host=db user=bp password=s3cr3t-pw dbname=lake",
        "--history=postgresql://bp:hunter2x@db:5432/hist",
        "--alert_webhook=https://hooks.example.com/services/T0/B0/XyZtoken",
        "--s3_secret_access_key",
        "AKIAVERYSECRET",
        "--input=s3://b/in/*.jsonl?X-Amz-Signature=abcdef123&part=1",
        "--output=out",
    ])  # fmt: skip
    assert args == [
        "--pg_dsn=host=db user=bp password=*** dbname=lake",
        "--history=postgresql://bp:***@db:5432/hist",
        "--alert_webhook=***",
        "--s3_secret_access_key",
        "***",
        "--input=s3://b/in/*.jsonl?X-Amz-Signature=***&part=1",
        "--output=out",
    ]
    # The same values anywhere else (a driver echoing the DSN in an error) are hidden too.
    hook = "https://hooks.example.com/services/T0/B0/XyZtoken"
    echoed = r({"error": f"connection to s3cr3t-pw / hunter2x / AKIAVERYSECRET / {hook} failed", "n": 3})
    assert echoed == {"error": "connection to *** / *** / *** / *** failed", "n": 3}
    other = Redactor(secrets=["host=db password='a b c'"])
    assert "a b c" not in other.text("failed: host=db password='a b c' (and a b c)")


def test_who_takes_the_given_user_and_keeps_the_os_user(monkeypatch):
    monkeypatch.delenv(audit_log.USER_ENV, raising=False)
    plain = audit_log.who()
    assert plain["user"] == plain["os_user"] and plain["host"]
    monkeypatch.setenv(audit_log.USER_ENV, "svc-airflow")
    assert audit_log.who()["user"] == "svc-airflow"
    assert audit_log.who("bob")["user"] == "bob" and audit_log.who("bob")["os_user"] == plain["os_user"]


def test_recorder_writes_start_and_end_or_the_error(tmp_path):
    path = tmp_path / "log.jsonl"
    rec = Recorder(AuditLog(str(path), clock=ticking()), "run", WHO)
    rec.once["args"] = rec.redact.args(["--output=o", "--pg_dsn=postgresql://u:pw-123@h/db"])
    rec.note(run_id="r1", output="o")
    with rec.recording():
        rec.start()
        rec.outcome = "published"
        rec.end(counts={"read": 5})
    rec2 = Recorder(AuditLog(str(path), clock=ticking(T0 + timedelta(minutes=1))), "redrive", WHO)
    rec2.note(run_id="r2")
    with pytest.raises(RunError), rec2.recording():
        rec2.start()
        raise RunError("pipeline failed: boom with pw-123\nsecond line")
    rec3 = Recorder(AuditLog(str(path)), "clean", WHO)
    with pytest.raises(RunError), rec3.recording():
        rec3.outcome = "refused"
        raise RunError("output o is in use")
    entries = [json.loads(line) for line in lines(path)]
    assert [(e["action"], e["outcome"]) for e in entries] == [
        ("run", "started"),
        ("run", "published"),
        ("redrive", "started"),
        ("redrive", "failed"),
        ("clean", "refused"),
    ]
    assert entries[0]["what"] == {
        "args": ["--output=o", "--pg_dsn=postgresql://u:***@h/db"],
        "output": "o",
        "run_id": "r1",
    }
    assert entries[1]["what"] == {"counts": {"read": 5}, "output": "o", "run_id": "r1"}  # the command line once
    assert entries[3]["what"]["error"] == "pipeline failed: boom with pw-123"  # another command's secret
    assert entries[4]["what"] == {"error": "output o is in use"}
    assert verify(path.read_bytes()).error is None


def test_recorder_without_a_writable_log(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    rec = Recorder(AuditLog(str(blocker / "_audit" / "log.jsonl"), output=str(blocker)), "run", WHO)
    with pytest.raises(AuditError, match=r"output '.*a-file' is not writable: .*Not a directory.*nothing was done"):
        with rec.recording():
            rec.start()
            raise AssertionError("not reached")
    # An error of the command itself keeps its line, with the log's failure added.
    rec = Recorder(AuditLog(str(blocker / "log.jsonl")), "run", WHO)
    with pytest.raises(RunError, match=r"^no file matches; not recorded in the audit log .*log.jsonl: .*File exists"):
        with rec.recording():
            raise RunError("no file matches")


def _cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    return audit_log.command(list(args), out), out.getvalue()


def test_verify_and_show_commands(tmp_path, capsys):
    out_dir = tmp_path / "out"
    filled(out_dir / "_audit" / "log.jsonl", 3)
    code, text = _cli("verify", f"--output={out_dir}")
    head = json.loads(lines(out_dir / "_audit" / "log.jsonl")[-1])["hash"]
    assert code == 0 and text == f"audit log OK: 3 entries, last seq 3 at 2026-03-01T12:00:02.000+00:00, head {head}\n"
    code, text = _cli("verify", f"--log={out_dir}/_audit/log.jsonl", f"--head={head}")
    assert code == 0 and text.endswith("; the recorded head (seq 3) is in it\n")
    code, text = _cli("show", f"--output={out_dir}", "--last=2")
    assert code == 0 and len(text.splitlines()) == 2
    assert text.splitlines()[0].split()[:6] == [
        "2",
        "2026-03-01T12:00:01.000+00:00",
        "alice",
        "(svc@h1)",
        "run",
        "published",
    ]
    code, text = _cli("show", f"--output={out_dir}", "--json")
    assert text.encode() == (out_dir / "_audit" / "log.jsonl").read_bytes()
    capsys.readouterr()
    assert _cli("verify", f"--output={tmp_path / 'none'}")[0] == 1
    assert capsys.readouterr().err == f"error: no audit log at {tmp_path / 'none'}/_audit/log.jsonl\n"
    (out_dir / "_audit" / "log.jsonl").write_bytes(b"".join(lines(out_dir / "_audit" / "log.jsonl")[1:]))
    assert _cli("verify", f"--output={out_dir}")[0] == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: audit log ") and "line 1 (seq 2)" in err


@pytest.mark.parametrize(
    "args",
    [(), ("check", "--output=o"), ("verify",), ("verify", "--output=o", "--log=l"), ("verify", "--output=o", "--nope=1"),
     ("show", "--output=o", "--last=x")],
)  # fmt: skip
def test_bad_flags_exit_2(args, capsys):
    with pytest.raises(SystemExit) as e:
        audit_log.command(list(args))
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err

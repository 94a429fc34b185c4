"""The audit log: who did what to which data, and when, in an append-only, hash-chained file.

    python -m beam_pipelines.audit_log verify --output=OUT [--head=HASH]   # or --log=PATH
    python -m beam_pipelines.audit_log show --output=OUT [--last=N] [--json]

Every command that may change an output appends entries: a run (batch or streaming) and a
redrive a ``started`` entry once they hold the output's lease (before they touch anything: a
log that cannot be written stops them there) and one entry with the outcome (``published``,
``finished``, ``audit_failed``, ``unchanged``, ``failed``, ``refused`` when the output's lease
was not to be had); ``clean`` one entry (``done``, ``failed`` or ``refused``). A dry run changes
no data and writes no entry. Commands that bring in a new kind of access append through the same
two calls, e.g. an erasure by subject or a decrypt::

    log = AuditLog(path)
    log.append("erasure", "done", {"subject": token, "tables": [...], "rows": n})

(or a ``Recorder`` for a command with a start and an end). Nothing else changes for them.

An entry is one JSON line::

    {"seq": 3, "time": "2026-12-06T10:15:00.123+00:00", "who": {"user", "os_user", "host"},
     "action": "run", "outcome": "published", "what": {run id, input, output, counts, ...},
     "prev": "<hash of entry 2>", "hash": "<sha256 of this entry without hash>"}

``hash`` is the SHA-256 of the entry's canonical JSON (keys sorted, no spaces, UTF-8) without
``hash``; ``prev`` is the previous entry's ``hash`` (64 zeros for the first). ``verify``
recomputes the chain and names the first entry that was edited (its hash, or its bytes, no
longer match), deleted, inserted or moved (its ``seq`` or ``prev`` no longer match), or cut
off mid-line. What a chain alone cannot show: a tail cut at a line end (the log then just looks
shorter), or a log rewritten from some entry on with every later hash recomputed (the hashes
are not keyed). Both are caught by keeping the head hash ``verify`` prints somewhere else
(the run's orchestrator, a ticket) and giving it back as ``verify --head=HASH``.

Where: ``<output>/_audit/log.jsonl`` unless ``--audit_log=PATH`` (any Beam filesystem) says
otherwise. Appends from concurrent processes are serialised: on a local disk with ``flock`` on
the log file (the entry is written with one ``write`` and the file cut back if it fails, so the
log stays whole on a full disk); on S3 by a conditional put (``If-Match`` on the ETag read,
``If-None-Match: *`` for the first entry), retried when another writer came first; on gs:// and
azfs:// by reading, appending and writing back through Beam's filesystems, which have no
conditional write: two appends within the same instant can lose one there (as for the lease,
see ``lease.py``). An append links to the last entry only after checking that entry's hash: a
log whose last line is damaged takes no more entries until someone looks at it (``verify``
names the line).

``who`` is ``--audit_user`` (or ``$BEAM_PIPELINES_AUDIT_USER``) when given, else the OS user;
the OS user and host are always recorded beside it. Entries never hold a secret: command-line
flags named like one (password, secret, token, key, credential, webhook) are kept as ``***``,
and passwords in URLs and connection strings, and those values wherever else they occur, are
replaced by ``***`` (``Redactor``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import getpass
import hashlib
import json
import logging
import os
import random
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

from beam_pipelines.errors import RunError, UsageError

__all__ = [
    "GENESIS",
    "USER_ENV",
    "AuditError",
    "AuditLog",
    "Recorder",
    "Redactor",
    "check_entry",
    "default_path",
    "describe",
    "file_sha256",
    "recorder",
    "run_fields",
    "verify",
    "who",
]

_LOG = logging.getLogger(__name__)
GENESIS = "0" * 64
USER_ENV = "BEAM_PIPELINES_AUDIT_USER"
LOG_PATH = ("_audit", "log.jsonl")
FIELDS = ("seq", "time", "who", "action", "outcome", "what", "prev", "hash")
_HASH = re.compile(r"^[0-9a-f]{64}$")
_S3_ATTEMPTS = 20


class AuditError(RunError):
    """The audit log could not be read or appended to (exit 1).

    Args:
        message: The error line.
        path: The audit log.
        why: What went wrong, without the log's path.
    """

    def __init__(self, message: str, path: str = "", why: str = ""):
        super().__init__(message)
        self.path, self.why = path, why or message


def _utc(clock: Callable[[], datetime]) -> str:
    now = clock()
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"the audit log's clock must give timezone-aware datetimes, got {now!r}")
    return now.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def _sorted(obj):
    if isinstance(obj, dict):
        return {str(k): _sorted(obj[k]) for k in sorted(obj, key=str)}
    if isinstance(obj, (list, tuple)):
        return [_sorted(v) for v in obj]
    return obj


def canonical(entry: dict) -> bytes:
    """The bytes an entry's hash is taken over: its JSON without ``hash``, keys sorted, no spaces."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def entry_hash(entry: dict) -> str:
    return hashlib.sha256(canonical(entry)).hexdigest()


def line_of(entry: dict) -> bytes:
    """An entry as it is stored: one line, fields in their fixed order, nested keys sorted."""
    ordered = {k: _sorted(entry[k]) for k in FIELDS}
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode() + b"\n"


def who(audit_user: str | None = None) -> dict:
    """The entry's ``who``: ``--audit_user`` or ``$BEAM_PIPELINES_AUDIT_USER`` if given, else the OS user."""
    try:
        os_user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (some containers)
        os_user = f"uid {os.getuid()}"
    given = (audit_user or os.environ.get(USER_ENV) or "").strip()
    return {"user": given or os_user, "os_user": os_user, "host": socket.gethostname()}


def default_path(output: str) -> str:
    """Where an output's audit log is kept unless ``--audit_log`` says otherwise."""
    from transforms.sinks.files import join_path

    return join_path(output, *LOG_PATH)


# -- secrets ---------------------------------------------------------------------------------

_SECRET_FLAG = re.compile(r"password|passwd|secret|token|credential|webhook|api_?key|access_?key|private", re.I)
_URL_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)(?P<pw>[^@\s/]+)(?=@)")
_KV_PASSWORD = re.compile(r"(?P<pre>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|[^\s&;]+)", re.I)
_QUERY_PARAM = re.compile(r"(?P<pre>[?&](?P<name>[A-Za-z0-9_.-]+)=)(?P<pw>[^&\s#]+)")
_SIGNATURES = {"sig", "signature", "x-amz-signature", "x-goog-signature", "x-amz-security-token", "code"}
HIDDEN = "***"


def _hide(m: re.Match) -> str:
    return m.group("pre") + HIDDEN


class Redactor:
    """Replaces secrets in what an entry records: passwords in URLs (``scheme://user:PW@``) and
    connection strings (``password=PW``), secret-looking query parameters, and any value found
    that way or given (``secrets``) wherever else it occurs (an error message echoing a DSN).

    Args:
        secrets: Values to hide wherever they occur.
    """

    def __init__(self, secrets=()):
        self.secrets: set[str] = set()
        self.hide(*secrets)

    def hide(self, *values: str | None) -> None:
        """Hides these values (and the passwords in them) wherever they occur."""
        for value in values:
            if value and len(value) >= 3:
                self.secrets.add(value)
                self._collect(value)

    @staticmethod
    def _found(text: str) -> Iterator[re.Match]:
        yield from _URL_PASSWORD.finditer(text)
        yield from _KV_PASSWORD.finditer(text)
        yield from filter(Redactor._secret_param, _QUERY_PARAM.finditer(text))

    @staticmethod
    def _secret_param(m: re.Match) -> bool:
        return bool(_SECRET_FLAG.search(m.group("name"))) or m.group("name").lower() in _SIGNATURES

    def _collect(self, text: str) -> None:
        for m in self._found(text):
            value = m.group("pw").strip("'")
            if len(value) >= 3:
                self.secrets.add(value)

    def args(self, argv: list[str]) -> list[str]:
        """The command line with secret flags' values hidden (and remembered as secrets)."""
        out = []
        for i, arg in enumerate(argv):
            name, eq, value = arg.partition("=")
            if arg.startswith("--") and eq and _SECRET_FLAG.search(name):
                self.secrets.add(value)
                out.append(f"{name}={HIDDEN}")
            elif i > 0 and not eq and argv[i - 1].startswith("--") and "=" not in argv[i - 1] \
                    and _SECRET_FLAG.search(argv[i - 1]) and not arg.startswith("--"):  # fmt: skip
                self.secrets.add(arg)
                out.append(HIDDEN)
            else:
                self._collect(arg)
                out.append(arg)
        return [self.text(a) for a in out]

    def text(self, text: str) -> str:
        self._collect(text)
        text = _KV_PASSWORD.sub(_hide, _URL_PASSWORD.sub(_hide, text))
        text = _QUERY_PARAM.sub(lambda m: _hide(m) if self._secret_param(m) else m.group(0), text)
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, HIDDEN)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")  # a path that is not UTF-8, escaped

    def __call__(self, obj):
        """``obj`` (JSON-like) with every string redacted."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {str(k): self(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self(v) for v in obj]
        if isinstance(obj, float) and obj != obj:  # NaN: not JSON
            return None
        return obj


# -- storage ---------------------------------------------------------------------------------


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _last_line(data: bytes) -> bytes | None:
    """The last line of ``data`` (with its newline); b'' when empty."""
    if not data:
        return b""
    cut = data.rfind(b"\n", 0, len(data) - 1)
    return data[cut + 1 :]


class _LocalStore:
    def __init__(self, path: str):
        self.path = path.removeprefix("file://")

    def read(self) -> bytes | None:
        try:
            with open(self.path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def append(self, make: Callable[[bytes], bytes]) -> None:
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released with the close
            size = os.fstat(fd).st_size
            line = make(self._tail(fd, size))
            try:
                if os.write(fd, line) != len(line):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)  # no torn entry left behind
                raise
        finally:
            os.close(fd)

    @staticmethod
    def _tail(fd: int, size: int) -> bytes:
        if size == 0:
            return b""
        chunk = 65_536
        while True:
            start = max(0, size - chunk)
            data = os.pread(fd, size - start, start)
            line = _last_line(data)
            if start == 0 or len(line) < len(data):
                return line
            chunk *= 4


class _S3Store:
    """Conditional puts: a writer that read an older version retries (see the module doc)."""

    def __init__(self, path: str, options):
        from beam_pipelines.lease import _s3_client

        self.path = path
        self.bucket, _, self.key = path.removeprefix("s3://").partition("/")
        self.client = _s3_client(options)

    def _get(self) -> tuple[bytes, str] | None:
        from beam_pipelines.object_stores import s3_get

        return s3_get(self.client, self.bucket, self.key)

    def read(self) -> bytes | None:
        found = self._get()
        return None if found is None else found[0]

    def append(self, make: Callable[[bytes], bytes]) -> None:
        from botocore.exceptions import ClientError

        for attempt in range(_S3_ATTEMPTS):
            found = self._get()
            data, etag = found if found is not None else (b"", None)
            body = data + make(_last_line(data))
            condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
            try:
                self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, **condition)
                return
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code")
                if code not in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                    raise
            time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))  # another writer came first
        raise OSError(f"{_S3_ATTEMPTS} attempts, each beaten by another writer")


class _FileSystemsStore:
    """Read, append, write back through Beam's filesystems (no conditional write: see the module doc)."""

    def __init__(self, path: str):
        self.path = path

    def read(self) -> bytes | None:
        from apache_beam.io.filesystems import FileSystems

        try:
            with FileSystems.open(self.path, mime_type="application/octet-stream") as fh:
                return fh.read()
        except FileNotFoundError:  # azfs (whose exists() raises for a missing blob)
            return None
        except Exception:  # each filesystem has its own not-found error: anything else is a failed read
            with contextlib.suppress(Exception):
                if not FileSystems.exists(self.path):
                    return None
            raise

    def append(self, make: Callable[[bytes], bytes]) -> None:
        from apache_beam.io.filesystems import FileSystems

        data = self.read() or b""
        body = data + make(_last_line(data))
        with FileSystems.create(self.path, mime_type="application/octet-stream") as fh:
            fh.write(body)


def _store(path: str, options):
    if _is_local(path):
        return _LocalStore(path)
    if path.startswith("s3://"):
        return _S3Store(path, options)
    return _FileSystemsStore(path)


# -- the log ---------------------------------------------------------------------------------


class AuditLog:
    """An append-only, hash-chained log of entries (see the module doc).

    Args:
        path: The log file (local, s3://, gs://, azfs://).
        clock: Gives the entries' times (timezone-aware).
        options: Pipeline options for object stores (endpoints, credentials).
        output: The output this log is kept under, if it is (errors then say the output is not writable).
    """

    def __init__(self, path: str, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc), options=None,
                 output: str | None = None):  # fmt: skip
        self.path, self.clock, self.output = path, clock, output
        self._store = _store(path, options)

    def _error(self, e: BaseException) -> AuditError:
        from beam_pipelines.object_stores import plain_error

        why = plain_error(e) if not isinstance(e, AuditError) else str(e)
        if self.output is not None and not isinstance(e, AuditError):
            message = f"output {self.output!r} is not writable: {why} (appending to its audit log {self.path})"
            return AuditError(message, self.path, why)
        return AuditError(f"cannot append to the audit log {self.path}: {why}", self.path, why)

    def append(self, action: str, outcome: str, what: dict, who_: dict | None = None) -> dict:
        """Appends one entry; returns it (with its ``seq`` and ``hash``). AuditError when it cannot."""
        if not re.fullmatch(r"[a-z][a-z0-9_]*", action) or not re.fullmatch(r"[a-z][a-z0-9_]*", outcome):
            raise ValueError(f"action and outcome are lower-case words, got {action!r}, {outcome!r}")
        written: dict = {}

        def make(last: bytes) -> bytes:
            prev, seq = GENESIS, 1
            if last:
                try:
                    before = check_entry(last)
                except ValueError as e:
                    look = f"python -m beam_pipelines.audit_log verify --log={self.path}"
                    raise AuditError(f"its last entry is damaged ({e}); no entry is added after it until it is "
                                     f"looked at: {look}") from None  # fmt: skip
                prev, seq = before["hash"], before["seq"] + 1
            entry = {"seq": seq, "time": _utc(self.clock), "who": _sorted(who_ or who()), "action": action,
                     "outcome": outcome, "what": _sorted(what), "prev": prev}  # fmt: skip
            entry["hash"] = entry_hash(entry)
            written.update(entry)
            return line_of(entry)

        try:
            self._store.append(make)
        except AuditError as e:
            raise self._error(e) from e
        except (ValueError, TypeError):  # a naive clock, a value that is not JSON: the caller's mistake
            raise
        except Exception as e:  # each filesystem raises its own errors
            raise self._error(e) from e
        return written

    def read(self) -> bytes | None:
        """The log's bytes, or None when there is no log."""
        return self._store.read()


def check_entry(line: bytes, prev: str | None = None, seq: int | None = None) -> dict:
    """The entry of one stored line; ValueError saying what is wrong with it (not JSON, not in its
    stored form, its hash, or, when given, its ``seq`` and ``prev``)."""
    if not line.endswith(b"\n"):
        raise ValueError("it is cut off (no line end): the tail was cut or a write was torn")
    try:
        entry = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"it is not a JSON entry ({e.msg if hasattr(e, 'msg') else e}): it was edited") from None
    if not isinstance(entry, dict) or sorted(entry) != sorted(FIELDS):
        raise ValueError("it does not have the fields of an entry: it was edited")
    if not isinstance(entry["seq"], int) or not all(isinstance(entry[k], str) and _HASH.match(entry[k])
                                                    for k in ("prev", "hash")):  # fmt: skip
        raise ValueError("its seq, prev or hash is not of its kind: it was edited")
    if line_of(entry) != line:
        raise ValueError("its bytes are not those it was written with: it was edited")
    if entry_hash(entry) != entry["hash"]:
        raise ValueError("its hash does not match its content: it was edited")
    if seq is not None and entry["seq"] != seq:
        raise ValueError(f"it has seq {entry['seq']} where {seq} was due: entries before it were deleted, inserted "
                         "or moved")  # fmt: skip
    if prev is not None and entry["prev"] != prev:
        raise ValueError("its prev is not the hash of the entry before it: an entry was deleted, inserted or moved")
    return entry


@dataclass
class Verified:
    """What ``verify`` found: the entries' count and the last one (None for an empty log)."""

    entries: int
    last: dict | None
    error: str | None = None
    head_seq: int | None = None


def lines_of(data: bytes) -> list[bytes]:
    """A log's lines, each with its line end (the last without one when it was cut off)."""
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    return lines + [parts[-1]] if parts[-1] else lines


def verify(data: bytes, head: str | None = None) -> Verified:
    """Recomputes the chain of a log's bytes; ``error`` names the first bad entry by line."""
    lines = lines_of(data)
    prev, last = GENESIS, None
    head_seq = None
    for n, line in enumerate(lines, 1):
        try:
            entry = check_entry(line, prev, n)
        except ValueError as e:
            return Verified(n - 1, last, f"line {n}{_seq_of(line)}: {e}")
        prev, last = entry["hash"], entry
        if head is not None and entry["hash"] == head:
            head_seq = entry["seq"]
    if head is not None and head_seq is None:
        return Verified(len(lines), last, f"the recorded head {head} is not in the log: entries after it were cut "
                                          "off, or the log was rewritten", None)  # fmt: skip
    return Verified(len(lines), last, None, head_seq)


def _seq_of(line: bytes) -> str:
    m = re.match(rb'\{"seq":(\d+),', line)
    return f" (seq {int(m.group(1))})" if m else ""


# -- recording a command ---------------------------------------------------------------------


@dataclass
class Recorder:
    """One command's entries: ``start()`` (optional), notes while it works, and one end entry
    (``recording()`` writes it, with the error when the command fails).

    Args:
        log: The audit log (None: record nothing).
        action: run, redrive, clean, ... .
        who_: The entries' ``who`` (``who()``).
        redact: Hides secrets in what is recorded.
    """

    log: AuditLog | None
    action: str
    who_: dict = field(default_factory=who)
    redact: Redactor = field(default_factory=Redactor)
    what: dict = field(default_factory=dict)
    once: dict = field(default_factory=dict)  # fields of the first entry only (the command line)
    outcome: str | None = None  # the end entry's outcome; None: "failed" on an error, else "done"
    ended: bool = False

    def note(self, **what) -> None:
        """Adds fields to this command's later entries."""
        self.what.update({k: v for k, v in what.items() if v is not None})

    def _append(self, outcome: str, extra: dict | None = None) -> dict | None:
        if self.log is None:
            return None
        entry = self.log.append(
            self.action, outcome, self.redact({**self.once, **self.what, **(extra or {})}), self.who_
        )
        self.once = {}
        return entry

    def start(self) -> None:
        """The ``started`` entry; AuditError (the command stops before doing anything) when it cannot be written."""
        try:
            self._append("started")
        except AuditError as e:
            self.ended = True  # nothing more goes into a log that takes nothing
            raise AuditError(f"{e}; nothing was done", e.path, e.why) from e

    def end(self, outcome: str | None = None, **what) -> None:
        """The end entry; AuditError when it cannot be written."""
        self.note(**what)
        self.ended = True
        outcome = outcome or self.outcome or "done"
        try:
            self._append(outcome)
        except AuditError as e:
            message = f"the {self.action} ended {outcome}, but its audit entry is not written: {e}"
            raise AuditError(message, e.path, e.why) from e

    @contextlib.contextmanager
    def recording(self) -> Iterator[Recorder]:
        """Writes the end entry if the body did not, and the failed one (with the error's first
        line) when it raises. An error writing that entry is added to the error's message."""
        try:
            yield self
        except (Exception, KeyboardInterrupt) as e:
            if self.ended:
                raise
            self.ended = True
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            outcome = self.outcome or ("interrupted" if isinstance(e, KeyboardInterrupt) else "failed")
            try:
                self._append(outcome, {"error": first})
            except AuditError as audit:
                note = f"{e}; not recorded in the audit log {audit.path}: {audit.why}"
                if isinstance(e, (RunError, UsageError)):  # the error line says both
                    raise (UsageError if isinstance(e, UsageError) else RunError)(note) from e
                _LOG.error("not recorded in the audit log %s: %s", audit.path, audit.why)
            raise
        if not self.ended:
            self.end()


def run_fields(summary: dict) -> dict:
    """What an end entry records of a run's (or redrive's) summary: the counts, the rows in the
    published files, the lakehouse commits, the input's size and the time taken."""
    fields = {k: summary[k] for k in ("counts", "published", "input_bytes", "elapsed_s") if summary.get(k) is not None}
    if summary.get("lakehouse"):
        keep = ("table", "layer", "version", "rows", "commit")
        fields["lakehouse"] = [{k: t.get(k) for k in keep} for t in summary["lakehouse"]]
    return fields


def file_sha256(path: str) -> str | None:
    """The SHA-256 of a local file (a spec: which code handled the data), None when unreadable."""
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return None


def recorder(action: str, output: str, *, log_path: str | None = None, audit_user: str | None = None,
             clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc), options=None,
             argv: list[str] | None = None) -> Recorder:  # fmt: skip
    """The Recorder of one command on ``output``: its log is ``log_path`` (``--audit_log``) or
    ``<output>/_audit/log.jsonl``; its first entry holds the command line (``argv``, redacted)."""
    log = AuditLog(log_path or default_path(output), clock, options, output=None if log_path else output)
    rec = Recorder(log, action, who(audit_user))
    if argv is not None:
        rec.once["args"] = rec.redact.args(list(argv))
    return rec


# -- the command -----------------------------------------------------------------------------

USAGE_DOC = """Checks or shows an audit log (see the README's Audit log section).

  verify   recompute the hash chain; exit 0 with one line naming the head hash, 1 with one
           error: line naming the first bad entry
  show     print the entries, one a line (--json: as stored)
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m beam_pipelines.audit_log", description=USAGE_DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="{verify,show}")
    for name, text in (("verify", "recompute the hash chain"), ("show", "print the entries")):
        p = sub.add_parser(name, help=text, description=text + "; Beam filesystem flags (--s3_endpoint_url, ...) "
                           "are passed on")  # fmt: skip
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--log", help="the audit log file (any Beam filesystem)")
        where.add_argument("--output", help="an output root: its log is OUTPUT/_audit/log.jsonl")
        if name == "verify":
            p.add_argument("--head", help="a head hash printed by an earlier verify: it must still be in the log")
        else:
            p.add_argument("--last", type=int, metavar="N", help="only the last N entries")
            p.add_argument("--json", action="store_true", help="the entries as stored (JSON lines)")
    return parser


def _value(v) -> str:
    return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))


def describe(entry: dict) -> str:
    """One line of ``show``: seq, time, who, action and outcome, and the main fields of ``what``."""
    w, what = entry["who"], entry["what"]
    by = f"{w.get('os_user', '?')}@{w.get('host', '?')}"
    if w.get("user") != w.get("os_user"):
        by = f"{w.get('user')} ({by})"
    parts = [f"{k}={_value(what[k])}" for k in ("run_id", "pipeline", "input", "dlq", "output") if k in what]
    counts = what.get("counts")
    if isinstance(counts, dict):
        shown = ("read", "curated", "dead_lettered", "duplicates", "late")
        parts.append("counts=" + ",".join(f"{k}:{counts[k]}" for k in shown if k in counts))
    redriven = what.get("redrive")
    if isinstance(redriven, dict):
        parts.append("redrive=" + ",".join(f"{k}:{redriven[k]}" for k in ("selected", "passed", "still_failing")
                                           if k in redriven))  # fmt: skip
    if isinstance(what.get("removed"), dict):
        parts.append(f"removed={len(what['removed'])} staging entr{'y' if len(what['removed']) == 1 else 'ies'}")
    parts += [f"{k}={_value(what[k])}" for k in ("completed_cut_off", "error") if k in what]
    return f"{entry['seq']:>5}  {entry['time']}  {by}  {entry['action']} {entry['outcome']}  " + " ".join(parts)


def command(argv: list[str], out=sys.stdout) -> int:
    """Runs ``verify`` or ``show``; returns the exit status (argparse exits 2 for bad flags)."""
    ns, rest = _parser().parse_known_args(argv)
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from beam_pipelines import object_stores
    from beam_pipelines.main import check_flags

    try:
        check_flags(rest)
    except UsageError as e:
        _parser().error(str(e))
    options = PipelineOptions(rest)
    FileSystems.set_options(options)
    object_stores.use_options(options)
    path = ns.log or default_path(ns.output)
    try:
        data = AuditLog(path, options=options).read()
    except Exception as e:  # each filesystem raises its own errors
        print(f"error: cannot read the audit log {path}: {object_stores.plain_error(e)}", file=sys.stderr)
        return 1
    if data is None:
        print(f"error: no audit log at {path}", file=sys.stderr)
        return 1
    if ns.command == "verify":
        found = verify(data, ns.head)
        if found.error:
            print(f"error: audit log {path}: {found.error}", file=sys.stderr)
            return 1
        if found.last is None:
            out.write(f"audit log OK: 0 entries ({path})\n")
            return 0
        head = f"; the recorded head (seq {found.head_seq}) is in it" if ns.head else ""
        out.write(f"audit log OK: {found.entries} entries, last seq {found.last['seq']} at {found.last['time']}, "
                  f"head {found.last['hash']}{head}\n")  # fmt: skip
        return 0
    lines = lines_of(data)
    if ns.last is not None:
        lines = lines[-ns.last :] if ns.last > 0 else []
    for line in lines:
        if ns.json:
            out.write(line.decode("utf-8", "replace"))
            continue
        try:
            out.write(describe(json.loads(line)).rstrip() + "\n")
        except (ValueError, KeyError, TypeError):
            out.write(f"  (not an entry: {line[:80]!r})\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    return command(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())

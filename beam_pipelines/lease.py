"""One writer per output: a lease on ``<output>/_lease.json`` held from start to publish.

A run takes the lease before it writes anything and keeps it fresh with a heartbeat; a second
run on the same output is refused (naming the holder) or waits. Publishing first checks that
the lease is still this run's (fencing), so a run that lost its lease cannot publish over a
newer run's outputs.

Two kinds of store:

* Local disks: the lease file is locked with ``flock``. The kernel drops the lock when its
  process dies, so a dead holder's lease is free at once; the file's content (run id, pid,
  host, heartbeat) names the holder. Fencing compares the locked file with the one at the path:
  a lease file removed or replaced under a run means the run lost it.
* S3: the lease object is created only if absent (``If-None-Match: *``) and refreshed only if
  unchanged (``If-Match``), so exactly one run holds it. A holder whose heartbeat is older than
  ``ttl`` is taken to be dead and its lease is taken over with ``If-Match`` on the stale
  version: of two runs taking over, one wins.

Other filesystems (gs://, azfs://) get the S3 scheme's heartbeat and expiry through Beam's
FileSystems, which has no conditional create: two runs starting within the same second can
both take the lease there. The README's reliability table says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from beam_pipelines.errors import RunError
from transforms.sinks.files import join_path

__all__ = ["HEARTBEAT_S", "LEASE_FILE", "TTL_S", "Lease", "LeaseError", "acquire", "holder_of"]

LEASE_FILE = "_lease.json"
HEARTBEAT_S = 10.0
TTL_S = 60.0  # a heartbeat this old means the holder is gone (object stores only)
_POLL_S = 1.0
log = logging.getLogger(__name__)


class LeaseError(RunError):
    """The output's lease is held by another run, or this run lost it (exit 1)."""


@dataclass(frozen=True)
class Holder:
    run_id: str
    pid: int
    host: str
    acquired: str
    heartbeat: str

    @classmethod
    def parse(cls, data: bytes) -> Holder | None:
        try:
            doc = json.loads(data)
            return cls(**{k: doc[k] for k in ("run_id", "pid", "host", "acquired", "heartbeat")})
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on {self.host}, since {self.acquired}, heartbeat {self.heartbeat})"


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="seconds")


class Lease:
    """A held lease; ``check()`` before publishing, ``release()`` when done (or use ``with``)."""

    def __init__(self, store, run_id: str, clock: Callable[[], datetime], heartbeat_s: float):
        self.store, self.run_id, self.clock, self.heartbeat_s = store, run_id, clock, heartbeat_s
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.resume()

    def pause(self) -> None:
        """Stops the heartbeat thread: a process about to fork worker processes wants no other
        thread (see warm_workers.py); ``resume()`` right after the fork."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        self._beat = None

    def resume(self) -> None:
        if self._beat is None:
            self._stop = threading.Event()
            self._beat = threading.Thread(
                target=self._heartbeat, args=(self.heartbeat_s,), name="lease-heartbeat", daemon=True
            )
            self._beat.start()

    @contextlib.contextmanager
    def fork_safe(self, workers):
        """Enters ``workers`` (a context that may fork) with the heartbeat paused for the fork."""
        self.pause()
        try:
            with workers as entered:
                self.resume()
                yield entered
        finally:
            self.resume()

    def _heartbeat(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.store.refresh(self._doc())
            except Exception as e:  # noqa: BLE001 - a lost lease is found by check() before publishing
                log.warning("lease heartbeat failed: %s", e)

    def _doc(self) -> bytes:
        return self.store.doc(self.run_id, _iso(self.clock()))

    def check(self) -> None:
        """Raises LeaseError unless this run still holds the lease (call right before publishing)."""
        problem = self.store.lost()
        if problem:
            raise LeaseError(f"lease on {self.store.output} lost ({problem}): nothing published")

    def release(self) -> None:
        self.pause()
        self.store.release()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(
    output: str,
    run_id: str,
    *,
    wait_s: float | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    sleep: Callable[[float], None] = time.sleep,
    heartbeat_s: float = HEARTBEAT_S,
    ttl_s: float = TTL_S,
    options=None,
) -> Lease:
    """Takes the lease on ``output`` for ``run_id``.

    Held by a live run: LeaseError naming the holder, or, with ``wait_s``, polls until it is free
    (``wait_s`` seconds at most; ``inf`` for no limit).
    """
    store = _store(output, options, ttl_s)
    waited = 0.0
    while True:
        try:
            holder = store.take(run_id, _iso(clock()), clock())
        except Exception as e:  # each store raises its own errors: a missing bucket, a file in the way
            from beam_pipelines.object_stores import plain_error

            raise LeaseError(f"output {output!r} is not writable: {plain_error(e)}") from e
        if holder is None:
            return Lease(store, run_id, clock, heartbeat_s)
        if wait_s is None or waited >= wait_s:
            how = "" if wait_s is None else f" after waiting {waited:.0f} s"
            raise LeaseError(
                f"output {output} is in use by {holder.describe()}{how}; "
                "give --wait_for_lock to wait for it, or another --output"
            )
        if waited == 0:
            log.warning("output %s is in use by %s; waiting", output, holder.describe())
        sleep(_POLL_S)
        waited += _POLL_S


def holder_of(output: str, options=None) -> Holder | None:
    """The live holder of ``output``'s lease, or None (for ``clean``)."""
    return _store(output, options, TTL_S).live_holder(datetime.now(timezone.utc))


def _store(output: str, options, ttl_s: float):
    if "://" not in output or output.startswith("file://"):
        return _LocalStore(output.removeprefix("file://"))
    if output.startswith("s3://"):
        return _S3Store(output, options, ttl_s)
    return _FileSystemsStore(output, ttl_s)


def _doc(run_id: str, acquired: str, now: str) -> bytes:
    return json.dumps(
        {"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(), "acquired": acquired, "heartbeat": now},
        sort_keys=True,
    ).encode()


class _LocalStore:
    def __init__(self, output: str):
        self.output = output
        self.path = os.path.join(output, LEASE_FILE)
        self.fd: int | None = None
        self.acquired = ""
        self.made: list[str] = []

    def doc(self, run_id: str, now: str) -> bytes:
        return _doc(run_id, self.acquired, now)

    def take(self, run_id: str, now: str, _t: datetime) -> Holder | None:
        # Directories made for the lease alone go again on release, so a run that fails before
        # writing anything leaves no trace.
        missing, path = [], os.path.abspath(self.output)
        while not os.path.exists(path):
            missing.append(path)
            path = os.path.dirname(path)
        os.makedirs(self.output, exist_ok=True)
        self.made = missing or self.made
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = None
            with contextlib.suppress(OSError):
                holder = Holder.parse(os.pread(fd, 4096, 0))
            os.close(fd)
            return holder or Holder("(unknown)", 0, "?", "?", "?")
        if not self._same_file(fd):  # removed by its releasing holder between our open and lock
            os.close(fd)
            return self.take(run_id, now, _t)
        self.fd, self.acquired = fd, now
        self._write(self.doc(run_id, now))
        return None

    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _write(self, data: bytes) -> None:
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        os.fsync(self.fd)

    def refresh(self, data: bytes) -> None:
        if self.fd is not None and self._same_file(self.fd):
            self._write(data)

    def lost(self) -> str | None:
        return None if self._same_file(self.fd) else "the lease file was removed or replaced"

    def release(self) -> None:
        if self.fd is None:
            return
        if self._same_file(self.fd):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self.fd)  # drops the lock
        self.fd = None
        for made in self.made:
            try:
                os.rmdir(made)
            except OSError:  # holds outputs (or another run's lease) now
                break

    def live_holder(self, _now: datetime) -> Holder | None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None  # nobody holds it
        except BlockingIOError:
            return Holder.parse(os.pread(fd, 4096, 0)) or Holder("(unknown)", 0, "?", "?", "?")
        finally:
            os.close(fd)


class _RemoteStore:
    """Heartbeat and expiry, shared by the object-store schemes."""

    def __init__(self, output: str, ttl_s: float):
        self.output, self.ttl_s = output, ttl_s
        self.path = join_path(output, LEASE_FILE)
        self.acquired = ""
        self.version = None  # what this run last wrote (ETag, or its bytes)

    def doc(self, run_id: str, now: str) -> bytes:
        return _doc(run_id, self.acquired, now)

    def _stale(self, holder: Holder | None, now: datetime) -> bool:
        if holder is None:
            return True  # unreadable: a torn write of a dead run
        try:
            beat = datetime.fromisoformat(holder.heartbeat)
        except ValueError:
            return True
        return (now - beat).total_seconds() > self.ttl_s

    def live_holder(self, now: datetime) -> Holder | None:
        found = self._read()
        if found is None:
            return None
        holder = Holder.parse(found[0])
        return None if self._stale(holder, now) else holder

    def take(self, run_id: str, now: str, t: datetime) -> Holder | None:
        self.acquired = now
        data = self.doc(run_id, now)
        if self._create(data):
            return None
        found = self._read()
        if found is None:
            return self.take(run_id, now, t)  # released meanwhile
        holder = Holder.parse(found[0])
        if not self._stale(holder, t):
            return holder
        log.warning("taking over the lease of %s: its heartbeat is older than %.0f s", self.output, self.ttl_s)
        if self._replace(data, found[1]):
            return None
        return self.take(run_id, now, t)  # another run took it over first

    def refresh(self, data: bytes) -> None:
        self._replace(data, self.version)

    def lost(self) -> str | None:
        found = self._read()
        if found is None:
            return "the lease object is gone"
        return None if found[1] == self.version else "another run holds it now"

    def release(self) -> None:
        if self.version is not None and self.lost() is None:
            self._delete()
        self.version = None


class _S3Store(_RemoteStore):
    def __init__(self, output: str, options, ttl_s: float):
        super().__init__(output, ttl_s)
        self.bucket, _, key = output.removeprefix("s3://").partition("/")
        self.key = (key.rstrip("/") + "/" if key.strip("/") else "") + LEASE_FILE
        self.client = _s3_client(options)

    def _create(self, data: bytes) -> bool:
        return self._put(data, IfNoneMatch="*")

    def _replace(self, data: bytes, version) -> bool:
        return self._put(data, IfMatch=version)

    def _put(self, data: bytes, **condition) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.version = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=data, **condition)["ETag"]
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise

    def _read(self):
        from beam_pipelines.object_stores import s3_get

        return s3_get(self.client, self.bucket, self.key)

    def _delete(self) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key)


def _s3_client(options):
    import boto3
    from apache_beam.options.pipeline_options import PipelineOptions, S3Options

    s3 = (options or PipelineOptions([])).view_as(S3Options)
    return boto3.client(
        "s3",
        endpoint_url=s3.s3_endpoint_url,
        aws_access_key_id=s3.s3_access_key_id,
        aws_secret_access_key=s3.s3_secret_access_key,
        aws_session_token=s3.s3_session_token,
        region_name=s3.s3_region_name,
        verify=s3.s3_verify,
        use_ssl=not s3.s3_disable_ssl,
    )


class _FileSystemsStore(_RemoteStore):
    """Beam FileSystems without conditional writes: check, then write (see the module doc)."""

    def _create(self, data: bytes) -> bool:
        if self._read() is not None:
            return False
        return self._replace(data, None)

    def _replace(self, data: bytes, version) -> bool:
        from apache_beam.io.filesystems import FileSystems

        found = self._read()
        if version is not None and (found is None or found[1] != version):
            return False
        with FileSystems.create(self.path, mime_type="application/json") as fh:
            fh.write(data)
        self.version = data
        return True

    def _read(self):
        from apache_beam.io.filesystems import FileSystems

        try:
            with FileSystems.open(self.path, mime_type="application/json") as fh:
                data = fh.read()
        except Exception:  # noqa: BLE001 - each filesystem raises its own not-found error
            return None
        return data, data

    def _delete(self) -> None:
        from beam_pipelines import object_stores  # gs:// deletes without batch requests

        object_stores.delete([self.path])

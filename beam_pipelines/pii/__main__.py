"""The PII command line.

    python -m beam_pipelines.pii keygen --to=PATH
    python -m beam_pipelines.pii decrypt --output=OUT --path=TABLE_OR_FILE [--columns=a,b] [--to=FILE]
                                         [--master_key=REF] [--audit_log=PATH] [--audit_user=WHO]
    python -m beam_pipelines.pii rotate --output=OUT --from_key=REF --to_key=REF [--audit_log=PATH]

``keygen`` writes a new random key (base64, mode 0600), usable as a master or an HMAC key.
``decrypt`` reads a Delta table (its current version), a parquet or JSON-lines file (the dead
letters) or a directory of them under --output, decrypts every encrypted value with the data
keys of ``<output>/_keys/`` (opened with the master key), and writes the rows as JSON lines; it
appends a ``decrypt`` entry to the output's audit log before it writes anything (who, which
data, which columns, which data keys), and a ``failed`` one when the key does not open them.
``rotate`` re-wraps every data key under the new master key (the data is not rewritten) and
appends a ``rotate`` entry. A mistake (a missing key, a key that does not open) is one
``error:`` line and exit status 1.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys

import pyarrow as pa

from beam_pipelines import audit_log
from beam_pipelines.pii import keys
from beam_pipelines.pii.protect import decrypt_values, key_ids
from transforms.sinks.files import join_path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m beam_pipelines.pii", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keygen", help="write a new random key (base64) to a file")
    k.add_argument("--to", required=True, help="the key file to create (refused if it exists)")
    for name, what in (("decrypt", "decrypt a table or parquet files of an output"),
                       ("rotate", "re-wrap an output's data keys under a new master key")):  # fmt: skip
        s = sub.add_parser(name, help=what)
        s.add_argument("--output", required=True, help="the pipeline's --output (its _keys/ holds the data keys)")
        s.add_argument("--audit_log", help="the audit log (default <output>/_audit/log.jsonl)")
        s.add_argument("--audit_user", help="who is recorded in the audit log (default the OS user)")
        if name == "decrypt":
            s.add_argument("--path", required=True, help="a Delta table, parquet file or directory under --output "
                                                         "(relative to it)")  # fmt: skip
            s.add_argument("--columns", help="comma-separated columns to decrypt (default: every column)")
            s.add_argument("--master_key", help=f"the master key's reference (default ${keys.MASTER_ENV})")
            s.add_argument("--to", help="write the JSON lines here (default: standard output)")
        else:
            s.add_argument("--from_key", help=f"the current master key's reference (default ${keys.MASTER_ENV})")
            s.add_argument("--to_key", required=True, help="the new master key's reference")
    return p


def _keygen(ns) -> int:
    fd = os.open(ns.to, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    print(f"wrote a new key to {ns.to} (reference: file:{os.path.abspath(ns.to)})")
    return 0


def _read_file(path: str) -> pa.Table:
    import pyarrow.parquet as pq

    if path.endswith(".jsonl"):  # the dead letters
        with open(path, encoding="utf-8") as fh:
            return pa.Table.from_pylist([json.loads(line) for line in fh if line.strip()])
    return pq.read_table(path, partitioning=None)


def _read(where: str) -> pa.Table:
    if os.path.isdir(os.path.join(where, "_delta_log")):
        from beam_pipelines.lakehouse import tables

        return tables.read(tables.open_table(where))
    if os.path.isdir(where):
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(where) for f in fs
                       if f.endswith((".parquet", ".jsonl")) and not os.path.basename(d).startswith("_"))  # fmt: skip
        if not files:
            raise keys.KeyUnavailable(f"no parquet or jsonl files under {where}")
        return pa.concat_tables([_read_file(f) for f in files], promote_options="default")
    if not os.path.exists(where):
        raise keys.KeyUnavailable(f"{where} does not exist")
    return _read_file(where)


def _decrypt(ns) -> int:
    master = keys.master_key(ns.master_key)  # a missing master key stops here, before anything is read
    where = os.path.normpath(os.path.join(ns.output, ns.path))
    if os.path.relpath(where, ns.output).startswith(".."):
        raise keys.KeyUnavailable(f"--path {ns.path} is outside --output")
    table = _read(where)
    wanted = ns.columns.split(",") if ns.columns else [
        n for n, t in zip(table.column_names, table.schema.types) if pa.types.is_string(t) or pa.types.is_large_string(t)
    ]  # fmt: skip
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise keys.KeyUnavailable(f"no column {missing[0]!r} in {ns.path} (columns: {', '.join(table.column_names)})")
    keys_dir = join_path(ns.output, keys.KEYS_DIR)
    ids = set().union(*(key_ids(table.column(c)) for c in wanted)) if wanted else set()
    log = audit_log.AuditLog(ns.audit_log or audit_log.default_path(ns.output), output=ns.output)
    what = {"output": ns.output, "path": ns.path, "columns": wanted, "rows": table.num_rows, "data_keys": sorted(ids),
            "master_key": master.id}  # fmt: skip
    try:
        data_keys = {i: master.unwrap(keys.read_manifest(keys_dir, i)) for i in sorted(ids)}
    except keys.KeyUnavailable as e:  # a try with the wrong key is recorded too
        log.append("decrypt", "failed", {**what, "error": str(e)}, audit_log.who(ns.audit_user))
        raise
    log.append("decrypt", "done", what, audit_log.who(ns.audit_user))
    for c in wanted:
        table = table.set_column(table.column_names.index(c), c, decrypt_values(table.column(c), data_keys))
    out = open(ns.to, "w") if ns.to else sys.stdout  # noqa: SIM115 - stdout is not ours to close
    try:
        for row in table.to_pylist():
            out.write(json.dumps(row, default=str, sort_keys=True) + "\n")
    finally:
        if ns.to:
            out.close()
    return 0


def _rotate(ns) -> int:
    old, new = keys.master_key(ns.from_key), keys.master_key(ns.to_key)
    keys_dir = join_path(ns.output, keys.KEYS_DIR)
    done = keys.rewrap(keys_dir, old, new)
    log = audit_log.AuditLog(ns.audit_log or audit_log.default_path(ns.output), output=ns.output)
    log.append("rotate", "done", {"output": ns.output, "from": old.id, "to": new.id, "data_keys": done},
               audit_log.who(ns.audit_user))  # fmt: skip
    print(f"re-wrapped {len(done)} data key(s) under {new.id}; the data is unchanged")
    return 0


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    try:
        return {"keygen": _keygen, "decrypt": _decrypt, "rotate": _rotate}[ns.command](ns)
    except (keys.KeyUnavailable, ValueError, FileExistsError, audit_log.AuditError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader stopped early (| head): nothing to say
        return 0
    except OSError as e:
        print(f"error: {e.strerror or e}: {getattr(e, 'filename', '') or ''}".rstrip(": "), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

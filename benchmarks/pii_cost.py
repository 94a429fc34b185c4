"""What protecting personal data costs: each action on a million values of each class, on one core.

    python -m benchmarks.pii_cost [--values 1000000] [--repeat 3] [--json benchmarks/results/pii_cost.json]

The values are generated (emails, names, phone numbers, addresses, IPv4 addresses and short
comments, distinct, of realistic lengths) as one Arrow string array per class; each action of
``beam_pipelines.pii.protect`` runs on the whole array, the best of ``--repeat`` kept. mask and
drop are ``pyarrow.compute``; token (HMAC-SHA-256) and encrypt/decrypt (AES-256-GCM) loop over
the values in Python (a token once per distinct value of a batch: ``token_repeated`` is the same
number of values, each one ten times, as a customer's email on each of their orders). A decrypt
must give back the values encrypted.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path

import pyarrow as pa

from beam_pipelines.pii.protect import decrypt_values, encrypt, mask, token
from benchmarks.run import ROOT, machine

CLASSES = ("email", "name", "phone", "address", "ip", "free_text")


def values(cls: str, n: int) -> pa.Array:
    make = {
        "email": lambda i: f"customer.number{i}@example.org",
        "name": lambda i: f"Firstname{i} Lastname",
        "phone": lambda i: f"+49 30 {i:09d}",
        "address": lambda i: f"{i % 200} Lindenstrasse, Apt {i}, 10115 Berlin",
        "ip": lambda i: f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
        "free_text": lambda i: f"please call after six, the parcel {i} goes to the neighbour",
    }[cls]
    return pa.array([make(i) for i in range(n)], pa.string())


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pii_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--values", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "pii_cost.json"))
    ns = parser.parse_args(argv)
    hmac_key, data_key = secrets.token_bytes(32), secrets.token_bytes(32)
    rows = []
    for cls in CLASSES:
        a = values(cls, ns.values)
        sealed = encrypt(a, data_key, "k1")
        assert decrypt_values(sealed, {"k1": data_key}).equals(a)
        row = {"class": cls, "values": ns.values}
        row["mask_s"] = best(lambda a=a, cls=cls: mask(a, cls), ns.repeat)
        row["token_s"] = best(lambda a=a, cls=cls: token(a, hmac_key, cls), ns.repeat)
        repeated = a.take(pa.array([i // 10 for i in range(len(a))]))
        row["token_repeated_s"] = best(lambda r=repeated, cls=cls: token(r, hmac_key, cls), ns.repeat)
        row["encrypt_s"] = best(lambda a=a: encrypt(a, data_key, "k1"), ns.repeat)
        row["decrypt_s"] = best(lambda s=sealed: decrypt_values(s, {"k1": data_key}), ns.repeat)
        row["drop_s"] = best(lambda a=a: pa.nulls(len(a), pa.string()), ns.repeat)
        rows.append(row)
        print(f"{cls:10} " + "  ".join(f"{k[:-2]} {row[k]:.3f}s" for k in row if k.endswith("_s")), flush=True)
    result = {"machine": machine(), "values": ns.values, "repeat": ns.repeat, "results": rows}
    path = Path(ns.json)
    path.write_text(json.dumps(result, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(result))
    return 0


def markdown(result: dict) -> str:
    n = result["values"]
    lines = [f"Seconds per {n:,} values, one core (best of {result['repeat']}); `python -m benchmarks.pii_cost`.", "",
             "| class | mask | token | token, each value 10 times | encrypt | decrypt | drop |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in result["results"]:
        keys = ("mask_s", "token_s", "token_repeated_s", "encrypt_s", "decrypt_s", "drop_s")
        cells = " | ".join(f"{r[k]:.3f}" for k in keys)
        lines.append(f"| {r['class']} | {cells} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

"""An independent, deliberately simple, per-record pure-Python reference of the ``events`` pipeline.

Written straight from SPEC-events.md (batch mode; no late data) with the stdlib only: it shares no
code with the project, so that comparing the two catches mistakes on either side. Speed does not
matter here; clarity does.

    reference(lines, source)                    # the raw lines of one jsonl file
    reference_many([(lines, source), ...])      # several files, deduplicated together
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta, timezone

DECLARED = ("event_id", "user_id", "event_type", "amount", "currency", "ts", "email", "country")
EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "refund")
PAID_TYPES = ("purchase", "refund")

NUMBER_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)
INT_RE = re.compile(r"[+-]?\d+", re.ASCII)
CURRENCY_RE = re.compile(r"[A-Za-z]{3}", re.ASCII)
ISO_RE = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<hm>\d{2}:\d{2})(?::(?P<s>\d{2})(?:\.(?P<frac>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}(?::?\d{2})?)?)?",
    re.ASCII,
)
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
COUNTRY_RE = re.compile(r"[A-Z]{2}", re.ASCII)

UTC = timezone.utc
TS_MIN = datetime(2000, 1, 1, tzinfo=UTC)
TS_MAX = datetime(2100, 1, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


class DeadLetter(Exception):
    def __init__(self, reason: str, field: str | None, error: str):
        super().__init__(error)
        self.reason, self.field, self.error = reason, field, error


def _reject_constant(name: str):
    raise ValueError(f"not JSON: {name}")


# ---------------------------------------------------------------- field rules


def _id(rec: dict, name: str) -> str:
    v = rec.get(name)
    if v is None:
        raise DeadLetter("missing_field", name, f"{name} is missing")
    if isinstance(v, bool) or isinstance(v, float):
        raise DeadLetter("invalid_value", name, f"{name} must be a string or an integer")
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        s = v.strip()
        if not s:
            raise DeadLetter("invalid_value", name, f"{name} is empty")
        return s
    raise DeadLetter("invalid_value", name, f"{name} must be a string or an integer")


def _event_type(rec: dict) -> str:
    v = rec.get("event_type")
    if v is None:
        raise DeadLetter("missing_field", "event_type", "event_type is missing")
    if isinstance(v, str) and v.strip().lower() in EVENT_TYPES:
        return v.strip().lower()
    raise DeadLetter("invalid_value", "event_type", "unknown event_type")


def _amount(rec: dict, event_type: str) -> float | None:
    v = rec.get("amount")
    if v is None:
        if event_type in PAID_TYPES:
            raise DeadLetter("missing_field", "amount", f"amount is required for {event_type}")
        return None
    if isinstance(v, bool):
        raise DeadLetter("invalid_value", "amount", "amount is not a number")
    if isinstance(v, (int, float)):
        x = float(v)
    elif isinstance(v, str) and NUMBER_RE.fullmatch(v.strip()):
        x = float(v.strip())
    else:
        raise DeadLetter("invalid_value", "amount", "amount is not a number")
    if math.isnan(x) or math.isinf(x):
        raise DeadLetter("invalid_value", "amount", "amount is not finite")
    if x < 0:
        raise DeadLetter("invalid_value", "amount", "amount is negative")
    return math.floor(x * 100 + 0.5) / 100


def _currency(rec: dict) -> str:
    v = rec.get("currency")
    if v is None:
        return "USD"
    if isinstance(v, str) and CURRENCY_RE.fullmatch(v.strip()):
        return v.strip().upper()
    raise DeadLetter("invalid_value", "currency", "currency must be 3 letters")


def _from_epoch_int(n: int) -> datetime:
    micros = n * 1000 if n >= 10**11 else n * 1_000_000
    return EPOCH + timedelta(microseconds=micros)


def _from_epoch_float(x: float) -> datetime:
    if math.isnan(x) or math.isinf(x) or abs(x) > 1e12:
        raise ValueError("epoch out of range")
    return EPOCH + timedelta(microseconds=round(x * 1_000_000))


def _from_iso(s: str) -> datetime:
    m = ISO_RE.fullmatch(s)
    if not m:
        raise ValueError("not ISO-8601")
    text = m["date"]
    if m["hm"]:
        text += "T" + m["hm"] + ":" + (m["s"] or "00")
        if m["frac"]:
            text += "." + (m["frac"][:6]).ljust(6, "0")
        tz = m["tz"]
        if tz and tz != "Z":
            digits = tz[1:].replace(":", "")
            text += tz[0] + digits[:2] + ":" + (digits[2:] or "00")
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _ts(rec: dict) -> datetime:
    v = rec.get("ts")
    if v is None:
        raise DeadLetter("missing_field", "ts", "ts is missing")
    try:
        if isinstance(v, bool):
            raise ValueError("boolean ts")
        if isinstance(v, int):
            dt = _from_epoch_int(v)
        elif isinstance(v, float):
            dt = _from_epoch_float(v)
        elif isinstance(v, str):
            s = v.strip()
            if INT_RE.fullmatch(s):
                dt = _from_epoch_int(int(s))
            elif NUMBER_RE.fullmatch(s):
                dt = _from_epoch_float(float(s))
            else:
                dt = _from_iso(s)
        else:
            raise ValueError("unsupported ts type")
    except (ValueError, OverflowError) as exc:
        raise DeadLetter("invalid_value", "ts", f"unparseable ts: {exc}") from None
    if not TS_MIN <= dt < TS_MAX:
        raise DeadLetter("invalid_value", "ts", "ts outside [2000-01-01, 2100-01-01)")
    return dt


def _as_text(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def _email(rec: dict) -> tuple[str | None, bool]:
    """(cleansed email, counted as invalid)."""
    s = _as_text(rec.get("email"))
    if s is None:
        return None, False
    s = s.strip().lower()
    if EMAIL_RE.fullmatch(s):
        return s, False
    return None, True


def _country(rec: dict) -> tuple[str | None, bool]:
    s = _as_text(rec.get("country"))
    if s is None:
        return None, False
    s = s.strip().upper()
    if COUNTRY_RE.fullmatch(s):
        return s, False
    return None, True


# ---------------------------------------------------------------- records


def _parse(line: bytes) -> tuple[str, dict]:
    """(raw text, JSON object) or DeadLetter malformed."""
    try:
        raw = line.decode("utf-8")
    except UnicodeDecodeError:
        raise DeadLetter("malformed", None, "not valid UTF-8") from None
    try:
        obj = json.loads(raw, parse_constant=_reject_constant)
    except ValueError as exc:
        raise DeadLetter("malformed", None, f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DeadLetter("malformed", None, "not a JSON object")
    try:  # an escaped lone surrogate (\\ud800) is no Unicode text: the record cannot be stored
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise DeadLetter("malformed", None, "lone surrogate in a string") from None
    return raw, obj


def _validate(rec: dict, policy: str) -> dict:
    row = {
        "event_id": _id(rec, "event_id"),
        "user_id": _id(rec, "user_id"),
        "event_type": _event_type(rec),
    }
    row["amount"] = _amount(rec, row["event_type"])
    row["currency"] = _currency(rec)
    row["ts"] = _ts(rec)
    unknown = [k for k in rec if k not in DECLARED]
    if policy == "strict" and unknown:
        raise DeadLetter("unknown_field", unknown[0], f"unknown field {unknown[0]!r}")
    return row


def _cleanse(rec: dict, row: dict, quality: dict) -> dict:
    email, bad_email = _email(rec)
    country, bad_country = _country(rec)
    quality["invalid_email"] += bad_email
    quality["invalid_country"] += bad_country
    ts = row["ts"]
    extras = {k: v for k, v in rec.items() if k not in DECLARED}
    return {
        **row,
        "email": email,
        "email_domain": email.rsplit("@", 1)[1].lower() if email is not None else None,
        "country": country,
        "hour_of_day": ts.hour,
        "day_of_week": ts.weekday(),
        "is_weekend": ts.weekday() >= 5,
        "extras": json.dumps(extras, separators=(",", ":"), ensure_ascii=False) if extras else None,
    }


def _aggregate(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, dict] = {}
    for r in rows:
        ts = r["ts"]
        start = ts.replace(minute=0, second=0, microsecond=0)
        g = groups.setdefault((start, r["event_type"], r["country"]), {"events": 0, "users": set(), "cents": 0})
        g["events"] += 1
        g["users"].add(r["user_id"])
        g["cents"] += round(r["amount"] * 100) if r["amount"] is not None else 0
    return [
        {
            "window_start": start,
            "window_end": start + HOUR,
            "event_type": et,
            "country": country,
            "events": g["events"],
            "users": len(g["users"]),
            "amount_sum": round(g["cents"] / 100, 2),
        }
        for (start, et, country), g in groups.items()
    ]


def _strip_eol(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return line[:-2]
    if line.endswith(b"\n"):
        return line[:-1]
    return line


def reference_many(inputs: list[tuple[list[bytes], str]], policy: str = "additive") -> dict:
    """The expected outputs for several input files (each: its raw lines, its source name)."""
    read = 0
    dead: list[dict] = []
    quality = {"invalid_email": 0, "invalid_country": 0}
    valid: list[tuple[dict, str]] = []  # (curated row, raw text)
    for lines, source in inputs:
        for line in lines:
            line = _strip_eol(line)
            if not line.strip():
                continue
            read += 1
            try:
                raw, rec = _parse(line)
                row = _validate(rec, policy)
            except DeadLetter as dl:
                dead.append(
                    {
                        "stage": "parse" if dl.reason == "malformed" else "validate",
                        "reason": dl.reason,
                        "field": dl.field,
                        "error": dl.error,
                        "raw": line.decode("utf-8", errors="backslashreplace"),
                        "source": source,
                    }
                )
                continue
            valid.append((_cleanse(rec, row, quality), raw))

    best: dict[str, tuple[dict, str]] = {}
    for row, raw in valid:
        kept = best.get(row["event_id"])
        if kept is None or (row["ts"], raw) < (kept[0]["ts"], kept[1]):
            best[row["event_id"]] = (row, raw)
    curated = [row for row, _ in best.values()]
    aggregates = _aggregate(curated)

    reasons: dict[str, int] = {}
    for d in dead:
        reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
    return {
        "curated": curated,
        "aggregates": aggregates,
        "dead_letters": dead,
        "dead_letter_reasons": reasons,
        "counts": {
            "read": read,
            "curated": len(curated),
            "dead_lettered": len(dead),
            "duplicates": len(valid) - len(curated),
            "late": 0,
            "aggregates": len(aggregates),
        },
        "quality": quality,
    }


def reference(lines: list[bytes], source: str, policy: str = "additive") -> dict:
    """The expected outputs of the ``events`` pipeline for the raw lines of one jsonl file."""
    return reference_many([(lines, source)], policy)

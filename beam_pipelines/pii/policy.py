"""The PII policy of a pipeline: which fields hold personal data (the contract's ``pii``) and what
each sink keeps of them (the spec's ``pii.actions``, else each class's default).

    pipeline:
      contract: customers@1          # fields with pii: email | name | phone | address | ip | free_text
      pii:
        master_key: kms:alias/lake   # or file:PATH, env:VAR; default: $BEAM_PIPELINES_PII_MASTER_KEY
        hmac_key: env:LAKE_HMAC      # or file:PATH; default: $BEAM_PIPELINES_PII_HMAC_KEY
        actions:                     # per field or per class: per target
          email: {bronze: encrypt, silver: token, gold: drop, WriteCustomers: mask, default: token}
          free_text: {default: drop}

A target is a sink step's name, a lakehouse layer (``bronze``, ``silver``, ``gold``), a sink role
(``curated``, ``aggregates``, ``received``, ``dead_letters``, ``output``), ``profile`` (the
column profiles, and through them the report and the lineage events) or ``default``. The most
specific one given wins: step name, then layer, then role, then ``default``, then the class's
default. A field's own entry wins over its class's.

What is written as received (bronze, the records of a source) and the dead letters' ``raw`` are
whole record texts: a field cannot be cut out of a line that may not even parse, so those
targets take ``keep`` or ``encrypt`` only and encrypt the whole text when any protected field's
action there is ``encrypt`` (the default: ``default`` does not reach them).
"""

from __future__ import annotations

from dataclasses import dataclass

from beam_pipelines.contracts.model import PII_CLASSES
from beam_pipelines.spec.yamlsrc import SpecError, did_you_mean, line_of, place_of

__all__ = ["ACTIONS", "CLASS_DEFAULTS", "PII_SCHEMA", "Policy", "RECORD_ROLES", "describe", "policy_of", "targets_of"]

ACTIONS = ("keep", "mask", "token", "encrypt", "drop")
# Each class's action where the spec says nothing: a token where joins need the value, a mask
# where a person reading the data needs its shape, nothing of what has no use downstream.
CLASS_DEFAULTS = {"email": "token", "name": "mask", "phone": "mask", "address": "drop", "ip": "mask",
                  "free_text": "drop"}  # fmt: skip
RECORD_ROLES = ("received", "dead_letters")
ROLES = ("curated", "aggregates", "received", "dead_letters", "output")
LAYERS = ("bronze", "silver", "gold")
_REF = r"^(file|env|kms):.+$"

PII_SCHEMA = {
    "type": "object",
    "description": "What each sink keeps of the contract's personal-data fields (README: PII protection).",
    "properties": {
        "master_key": {
            "type": "string",
            "pattern": _REF,
            "description": "Where the master key that wraps the data keys is: file:PATH, env:VAR or kms:KEY_ID "
            "(an AWS KMS key). Default: $BEAM_PIPELINES_PII_MASTER_KEY.",
        },
        "hmac_key": {
            "type": "string",
            "pattern": r"^(file|env):.+$",
            "description": "Where the key of the tokens (HMAC-SHA-256) is: file:PATH or env:VAR. Default: "
            "$BEAM_PIPELINES_PII_HMAC_KEY.",
        },
        "actions": {
            "type": "object",
            "description": "Per field name or PII class: target -> keep | mask | token | encrypt | drop. A target "
            "is a sink step's name, a layer (bronze, silver, gold), a role (curated, aggregates, received, "
            "dead_letters, output), profile or default.",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": {"enum": list(ACTIONS)},
            },
        },
    },
}


@dataclass(frozen=True)
class Policy:
    """A checked policy.

    Args:
        fields: Field name -> PII class, for the contract's personal-data fields.
        actions: Field name or class -> {target: action}, as the spec gives them.
        master_key: The master key's reference, or None (then the environment's).
        hmac_key: The HMAC key's reference, or None (then the environment's).
    """

    fields: dict
    actions: dict
    master_key: str | None = None
    hmac_key: str | None = None

    def action(self, field: str, targets: tuple[str, ...], record: bool = False) -> str:
        """What ``field`` gets at a sink known by ``targets`` (most specific first)."""
        cls = self.fields[field]
        for given in (self.actions.get(field, {}), self.actions.get(cls, {})):
            for t in targets:
                if t in given:
                    return given[t]
        if record:
            return "encrypt"
        for given in (self.actions.get(field, {}), self.actions.get(cls, {})):
            if "default" in given:
                return given["default"]
        return CLASS_DEFAULTS[cls]

    def column_actions(self, targets: tuple[str, ...], columns) -> dict[str, tuple[str, str]]:
        """Column -> (action, class) for the protected columns among ``columns`` (keep left out)."""
        out = {}
        for name in columns:
            if name in self.fields:
                a = self.action(name, targets)
                if a != "keep":
                    out[name] = (a, self.fields[name])
        return out

    def record_action(self, targets: tuple[str, ...]) -> str:
        """keep or encrypt for a whole record text (bronze, dead letters)."""
        return "encrypt" if any(self.action(f, targets, record=True) == "encrypt" for f in self.fields) else "keep"

    def uses(self, action: str, targets: list[tuple[str, ...]]) -> bool:
        return any(self.action(f, t) == action for f in self.fields for t in targets)


def targets_of(step) -> tuple[str, ...]:
    """A sink step's targets, most specific first."""
    layer = step.config.get("layer") if step.type == "WriteLakehouse" else None
    return tuple(t for t in (step.name, layer, step.role) if t)


def policy_of(pipe, contract, sinks, file: str | None) -> Policy | None:
    """The checked policy of a spec's ``pipeline`` mapping (None when the contract has no
    personal-data fields). SpecError naming its place at the first mistake."""
    fields = contract.pii_fields
    doc = pipe.get("pii")
    if not fields:
        if doc:
            raise SpecError("pipeline.pii", f"the contract {contract.name} has no field with pii: give its personal "
                                            "data fields a pii class", file, line_of(pipe, "pii"))  # fmt: skip
        return None
    doc = doc or {}
    actions = doc.get("actions") or {}
    names = {n.step.name: n.step for n in sinks}
    known_targets = {*names, *LAYERS, *ROLES, "profile", "default"}
    place = place_of("pipeline.pii", "actions")
    for key, per_target in actions.items():
        at = place_of(place, key)
        if key not in fields and key not in PII_CLASSES:
            known = sorted({*fields, *PII_CLASSES})
            hint = (
                did_you_mean(key, known)
                or f" (fields with pii: {', '.join(fields)}; classes: {', '.join(PII_CLASSES)})"
            )
            raise SpecError(
                at, f"{key!r} is neither a field with pii nor a PII class{hint}", file, line_of(actions, key)
            )
        for target, action in per_target.items():
            t_at, line = place_of(at, target), line_of(per_target, target)
            if target not in known_targets:
                hint = (
                    did_you_mean(target, known_targets) or " (a sink step's name, a layer, a role, profile or default)"
                )
                raise SpecError(t_at, f"unknown target {target!r}{hint}", file, line)
            step = names.get(target)
            record = target in RECORD_ROLES or target == "bronze" or (step is not None and step.role in RECORD_ROLES)
            if record and action not in ("keep", "encrypt"):
                raise SpecError(t_at, f"{target} holds whole record texts: keep or encrypt them ({action} would need "
                                      "the field cut out of text that may not parse)", file, line)  # fmt: skip
            if target == "profile" and action == "encrypt":
                raise SpecError(t_at, "a profile of encrypted values says nothing: give profile token, mask or drop",
                                file, line)  # fmt: skip
    policy = Policy(fields=dict(fields), actions={k: dict(v) for k, v in actions.items()},
                    master_key=doc.get("master_key"), hmac_key=doc.get("hmac_key"))  # fmt: skip
    for node in sinks:
        step = node.step
        if step.type == "WriteLakehouse" and step.config.get("layer") == "silver":
            merged_on, what = [getattr(step, "_key", None)], "silver merges on"
        elif step.type == "UpsertPostgres":
            merged_on, what = list(step.config.get("keys") or ()), f"{step.name} upserts on"
        else:
            continue
        for key in merged_on:
            if key in fields and policy.action(key, targets_of(step)) not in ("keep", "token"):
                raise SpecError(place_of(step.place, "config"), f"{what} {key!r}: keep it or token it (a mask, a drop "
                                "or an encryption would make keys collide or never match)", file)  # fmt: skip
    return policy


def describe(policy: Policy, sinks) -> list[str]:
    """One line per sink step: what it keeps of each personal-data field (``spec check`` prints them)."""
    lines = []
    for step in sinks:
        targets = targets_of(step)
        if step.role in RECORD_ROLES:
            lines.append(f"{step.name}: record text {policy.record_action(targets)}")
        else:
            lines.append(f"{step.name}: " + ", ".join(f"{f} {policy.action(f, targets)}" for f in policy.fields))
    profiled = {f: policy.action(f, ("profile",)) for f in policy.fields}  # an encrypt profiles as a token
    lines.append("profile: " + ", ".join(f"{f} {'token' if a == 'encrypt' else a}" for f, a in profiled.items()))
    return lines

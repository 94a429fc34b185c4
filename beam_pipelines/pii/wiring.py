"""Where a pipeline's policy is applied: before each sink, before the profile, and on the report.

``build`` asks a ``Protection`` for the composite that goes in front of each sink; the data keys
a run encrypts with are made here, one per run and sink, and stored wrapped under
``<output>/_keys/`` before the pipeline starts.
"""

from __future__ import annotations

import os

from beam_pipelines.pii import keys
from beam_pipelines.pii.policy import RECORD_ROLES, Policy, targets_of
from beam_pipelines.pii.protect import Protect
from transforms.sinks.files import join_path

__all__ = ["PROTECTED", "Protection", "redact_report", "redact_window_results"]

PROTECTED = "[protected]"  # what a report shows for a sample of a protected field


class Protection:
    """The run's application of ``policy``.

    Args:
        policy: The pipeline's checked policy.
        output: The run's --output (the data keys go under its ``_keys/``).
        clock: The run's clock (the data keys' creation time).
        store_keys: Whether the data keys are stored (False: a dry run).
    """

    def __init__(self, policy: Policy, output: str | None, clock=None, store_keys: bool = True):
        self.policy, self.output, self._clock, self._store = policy, output, clock, store_keys
        # The references the launcher resolves travel to the workers (a reference, never a key).
        self._master_ref = policy.master_key or os.environ.get(keys.MASTER_ENV)
        self._hmac_ref = policy.hmac_key or os.environ.get(keys.HMAC_ENV)
        self._master = None
        self._hmac_checked = False

    def _check_hmac(self, columns: dict) -> None:
        # Read once at launch so a missing key stops the run before any worker starts; the
        # workers read it again from its reference (the key never goes into the job graph).
        if not self._hmac_checked and any(a == "token" for a, _ in columns.values()):
            keys.hmac_key(self._hmac_ref)
            self._hmac_checked = True

    @property
    def keys_dir(self) -> str:
        if not self.output:
            raise ValueError("encrypting personal data needs --output: its data keys are kept under <output>/_keys")
        return join_path(self.output, keys.KEYS_DIR)

    def _data_key(self, target: str) -> dict:
        if self._master is None:
            self._master = keys.master_key(self._master_ref)
        keys_dir = self.keys_dir if self._store else None
        return keys.new_data_key(self._master, keys_dir, target, self._clock() if self._clock else None)

    def for_sink(self, step):
        """The ``Protect`` composite in front of sink ``step``, or None when it writes nothing personal."""
        targets = targets_of(step)
        p = self.policy
        if step.role in RECORD_ROLES:
            if p.record_action(targets) != "encrypt":
                return None
            fields = {f: ("encrypt", c) for f, c in p.fields.items() if p.action(f, targets, record=True) == "encrypt"}
            errors = (tuple(p.fields), "error") if step.role == "dead_letters" else None
            return Protect(fields, records=("raw",), errors=errors, master_ref=self._master_ref,
                           stored_key=self._data_key(step.name))  # fmt: skip
        columns = p.column_actions(targets, p.fields)
        if not columns:
            return None
        self._check_hmac(columns)
        encrypting = any(a == "encrypt" for a, _ in columns.values())
        return Protect(columns, hmac_ref=self._hmac_ref, master_ref=self._master_ref,
                       stored_key=self._data_key(step.name) if encrypting else None)  # fmt: skip

    def for_profile(self):
        """The ``Protect`` composite in front of the column profiles (encrypt profiles as a token)."""
        columns = {c: ("token" if a == "encrypt" else a, k)
                   for c, (a, k) in self.policy.column_actions(("profile",), self.policy.fields).items()}  # fmt: skip
        if not columns:
            return None
        self._check_hmac(columns)
        return Protect(columns, hmac_ref=self._hmac_ref)


def redact_report(report: dict, fields) -> dict:
    """``report`` with the samples of failed expectations on the protected ``fields`` replaced (an
    expression's samples are mappings of its columns: the protected ones replaced)."""
    for result in report.get("expectations") or ():
        mine = result.get("column") in fields
        result["samples"] = [
            {k: PROTECTED if k in fields else v for k, v in s.items()} if isinstance(s, dict)
            else PROTECTED if mine else s
            for s in result.get("samples") or ()
        ]  # fmt: skip
    return report


def redact_window_results(results: dict, fields) -> dict:
    """A window's expectation results (streaming: ``{"window_start", "window_end", "results"}``)
    with the samples of protected fields replaced, as :func:`redact_report` does."""
    redact_report({"expectations": results.get("results")}, fields)
    return results

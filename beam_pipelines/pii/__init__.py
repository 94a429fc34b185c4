"""Personal data protection (README: PII protection): the contract classifies fields (``pii:``),
the spec says what each sink keeps of them.

| module | what |
|---|---|
| `policy.py` | the spec's ``pii`` section checked: which action each field gets at each sink |
| `protect.py` | mask, token, encrypt, drop and decrypt on Arrow columns; ``Protect``, in front of a sink |
| `keys.py` | key references (file, env, KMS), data keys wrapped under ``<output>/_keys/``, re-wrapping |
| `wiring.py` | where ``build`` applies the policy: each sink, the profile, the report |
| `__main__.py` | ``python -m beam_pipelines.pii keygen|decrypt|rotate`` |
"""

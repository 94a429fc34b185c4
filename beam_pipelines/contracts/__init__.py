"""Record contracts as code: versioned YAML files, checked when read, looked up in registries,
and compared for compatibility (``python -m beam_pipelines.schemas``). Map: ``README.md``."""

from beam_pipelines.contracts.checks import ContractError
from beam_pipelines.contracts.compat import MODES, Problem, check_compatibility, check_history, is_compatible
from beam_pipelines.contracts.format import CONTRACT_SCHEMA
from beam_pipelines.contracts.loader import contract_from_doc, load_contract
from beam_pipelines.contracts.model import TYPES, Contract, Evolution, Field, RequiredIf
from beam_pipelines.contracts.registry import PACKAGED_SCHEMAS, Registry, UnknownContract, parse_ref

__all__ = [
    "CONTRACT_SCHEMA",
    "MODES",
    "PACKAGED_SCHEMAS",
    "TYPES",
    "Contract",
    "ContractError",
    "Evolution",
    "Field",
    "Problem",
    "Registry",
    "RequiredIf",
    "UnknownContract",
    "check_compatibility",
    "check_history",
    "contract_from_doc",
    "is_compatible",
    "load_contract",
    "parse_ref",
]

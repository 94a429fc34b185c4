"""``python -m beam_pipelines.schemas``: check, show and list record contracts.

Exit status: 0 when the command succeeded (``check``: compatible, warnings printed), 1 when
``check`` found the contracts incompatible (every reason on its own line), 2 for bad usage or
an invalid contract file (one ``error:`` line naming its place).
"""

from __future__ import annotations

import argparse
import os
import sys

from beam_pipelines.contracts import (
    MODES,
    PACKAGED_SCHEMAS,
    Contract,
    ContractError,
    Field,
    Registry,
    UnknownContract,
    check_history,
    is_compatible,
    load_contract,
)

__all__ = ["main"]

_MODES_HELP = (
    "backward: NEW reads data written under OLD (the default, as in Confluent Schema Registry); "
    "forward: OLD reads data written under NEW; full: both. A _transitive mode checks NEW against "
    "OLD and every earlier version of OLD's name in the registries."
)
_REF_HELP = (
    "a contract file (.yaml), or a registry reference: name (the latest), name@3 or name/v3, looked up in "
    "each --registry in turn, then in the packaged contracts"
)


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """Reports usage errors to ``main`` instead of exiting, so ``main`` returns 2 itself."""

    def error(self, message):
        raise _UsageError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m beam_pipelines.schemas",
        description="Record contracts: check two versions for compatibility, show one, list them all.",
        epilog="Exit status: 0 ok; 1 incompatible (check); 2 bad usage or an invalid contract file.",
    )
    registry = _Parser(add_help=False)
    registry.add_argument(
        "--registry",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder of <name>/v<N>.yaml contracts; repeat for several; looked up in order, before the packaged "
        "contracts",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{check,show,list}")
    check = sub.add_parser(
        "check",
        parents=[registry],
        help="is NEW compatible with OLD?",
        description="Checks that NEW can replace OLD under a compatibility mode. Prints each problem as "
        "'error: <place>: <reason>' or 'warning: <place>: <reason>' (a warning: data that passed before may now "
        "fail), then a summary line.",
        epilog="Exit status: 0 compatible (warnings allowed); 1 incompatible; 2 bad usage or an invalid contract.",
    )
    check.add_argument("old", metavar="OLD", help=f"the contract in use: {_REF_HELP}")
    check.add_argument("new", metavar="NEW", help="the contract to replace it, in the same forms as OLD")
    check.add_argument("--mode", type=str.lower, choices=MODES, default="backward", help=_MODES_HELP)
    show = sub.add_parser(
        "show",
        parents=[registry],
        help="one contract's fields as a table",
        description="Prints a contract's fields as a table: type, curated Arrow type, required, default, rules.",
    )
    show.add_argument("ref", metavar="REF", help=_REF_HELP)
    sub.add_parser(
        "list",
        parents=[registry],
        help="every contract name and its versions",
        description="Lists each contract in the registries, in lookup order, with its versions and folder.",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line ``argv`` (default: ``sys.argv[1:]``) and returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as e:
        print(f"error: {e} (see --help)", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)
    registry = Registry([*args.registry, PACKAGED_SCHEMAS])
    try:
        if args.command == "check":
            return _check(args, registry)
        if args.command == "show":
            return _show(_contract(args.ref, registry))
        return _list(registry)
    except ContractError as e:
        print(f"error: {_error_text(e)}", file=sys.stderr)
        return 2


def _error_text(e: ContractError) -> str:
    return str(e) if e.file else (f"{e.place}: {e.message}" if e.place else e.message)


def _contract(arg: str, registry: Registry) -> Contract:
    """A contract file, or a registry reference."""
    if arg.endswith((".yaml", ".yml")) or os.path.isfile(arg):
        return load_contract(arg)
    return registry.resolve(arg)


def _check(args, registry: Registry) -> int:
    old, new = _contract(args.old, registry), _contract(args.new, registry)
    earlier = [old]
    if args.mode.endswith("_transitive"):
        try:
            earlier = [c for c in registry.history(old.name) if c.version < old.version] + [old]
        except UnknownContract:
            earlier = [old]  # no registry knows the name: OLD is the whole history
    problems = check_history(earlier, new, args.mode)
    for p in problems:
        print(p)
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    against = ", ".join(f"v{c.version}" for c in earlier)
    verdict = "compatible" if is_compatible(problems) else "incompatible"
    print(
        f"{verdict} ({args.mode}): {new.name} v{new.version} against {against}: {errors} error(s), {warnings} warning(s)"
    )
    return 0 if is_compatible(problems) else 1


def _rules(f: Field) -> str:
    parts = []
    if f.values is not None:
        parts.append("values " + "|".join(f.values))
    if f.pattern is not None:
        parts.append(f"pattern {f.pattern}" + (f" ({f.case})" if f.case else ""))
    if f.minimum is not None:
        parts.append(f"min {f.minimum}")
    if f.maximum is not None:
        parts.append(f"max {f.maximum}" + (" (exclusive)" if f.type == "timestamp" else ""))
    if f.decimals is not None:
        parts.append(f"{f.decimals} decimals")
    if f.required_if is not None:
        parts.append(f"required if {f.required_if.describe()}")
    if f.aliases:
        parts.append("aliases " + ", ".join(f.aliases))
    if f.pii:
        parts.append(f"pii {f.pii}")
    return "; ".join(parts)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]


def _show(c: Contract) -> int:
    print(f"{c.name} v{c.version}" + (f": {c.doc}" if c.doc else ""))
    rows = [("field", "type", "arrow", "required", "default", "rules")]
    for f in c.fields:
        default = "" if f.default is None else str(f.default)
        rows.append((f.name, f.type_text, str(f.arrow_type), "yes" if f.required else "no", default, _rules(f)))
    for line in _table(rows):
        print("  " + line)
    print(f"evolution: columns {c.evolution.columns}, data_type {c.evolution.data_type}")
    return 0


def _shown_path(path: str) -> str:
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else path


def _list(registry: Registry) -> int:
    rows = [("name", "versions", "latest", "folder")]
    for name, root, versions, shadowed in registry.listing():
        folder = _shown_path(root) + (" (shadowed)" if shadowed else "")
        rows.append((name, ", ".join(str(v) for v in versions), str(versions[-1]), folder))
    if len(rows) == 1:
        print(f"no contracts in {', '.join(_shown_path(r) for r in registry.roots)}")
        return 0
    for line in _table(rows):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

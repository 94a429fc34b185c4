"""``python -m beam_pipelines.lakehouse maintain ...``: see ``lakehouse.maintain``."""

from __future__ import annotations

import sys

from beam_pipelines.lakehouse import maintain
from beam_pipelines.main import command_main

USAGE = "usage: python -m beam_pipelines.lakehouse maintain --pipeline=SPEC --output=OUT [--dry_run]\n\n" + (
    "Commands:\n  maintain   retention, compaction and vacuum of a spec's Delta tables (maintain --help)\n"
)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "maintain":
        return command_main(maintain.run, maintain.USAGE, argv[1:])
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    print(f"error: give a command: maintain (got {' '.join(argv) or 'nothing'})  (see --help)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

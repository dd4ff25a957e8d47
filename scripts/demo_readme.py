"""Write a recorded ``lmfuse demo`` run into the README's demo section (``make demo-record`` runs it).

python scripts/demo_readme.py benchmarks/demo/recorded.json README.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lmfuse.core.atomic import atomic_write_text
from lmfuse.demo_record import read_record, readme_block, replace_block


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("record", help="the JSON that `lmfuse demo --record` wrote")
    p.add_argument("readme", help="the README whose generated demo block is replaced")
    args = p.parse_args(argv)
    record, _ = read_record(args.record)
    readme = Path(args.readme)
    rel = Path(args.record).resolve().relative_to(readme.resolve().parent).as_posix()
    atomic_write_text(readme, replace_block(readme.read_text(encoding="utf-8"), readme_block(record, rel)))
    print(f"{readme}: demo table from {rel}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

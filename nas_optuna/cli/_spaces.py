"""``nas-optuna spaces``: the registered search spaces, their sizes and profiles."""

from __future__ import annotations

import argparse
import json

NAME = "spaces"
HELP = "list the registered search spaces"


def add_arguments(spaces: argparse.ArgumentParser) -> None:
    spaces.add_argument("--json", action="store_true", help="print JSON, one space per line")


def run(args: argparse.Namespace) -> int:
    from search_spaces import SPACES, get_space

    for name in SPACES.names():
        space = get_space(name)
        record = {
            "name": name,
            "profiles": list(space.profiles),
            "size": space.size(),
            "stem": space.stem_id,
            "summary": space.summary,
        }
        if args.json:
            print(json.dumps(record))
        else:
            size = record["size"]
            shown = f"{size:,}" if size < 10**6 else f"{size:.2e}"
            print(f"{name:10s} {shown:>9s} architectures  profiles "
                  f"{'/'.join(record['profiles']):13s} {record['summary']}")
    return 0

"""`plantcad-flows sync up|down LOCAL REMOTE [--include GLOB ...] [--exclude GLOB ...] [--dry-run]`.

`up` copies LOCAL to REMOTE, `down` REMOTE to LOCAL (`s3://bucket/path`, `hf://datasets/org/repo/path`,
or another local directory). Files the destination already holds (same size and checksum: see
plantcad_flows/layout/sync.py) are skipped, so a second sync transfers nothing. Credentials come
from the environment (AWS_*, AWS_ENDPOINT_URL, HF_TOKEN) and are never printed.
"""

from __future__ import annotations

import argparse
import sys

from plantcad_flows.secrets import strip_url_credentials


def cmd_sync(args: argparse.Namespace) -> int:
    from plantcad_flows.layout.sync import sync

    src, dst = (args.local, args.remote) if args.direction == "up" else (args.remote, args.local)
    try:
        report = sync(src, dst, include=args.include, exclude=args.exclude, dry_run=args.dry_run)
    except (ValueError, FileNotFoundError, PermissionError) as e:
        print(f"sync {args.direction}: {strip_url_credentials(str(e))}", file=sys.stderr)
        return 2
    verb = "would copy" if args.dry_run else "copied"
    for rel in report.copied:
        print(f"{verb} {rel}")
    where = f"{strip_url_credentials(src)} -> {strip_url_credentials(dst)}"
    print(f"{where}: {report.summary()}" + (" (dry run)" if args.dry_run else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sync", help="copy a directory to or from s3:// or hf://, skipping unchanged files")
    p.add_argument("direction", choices=("up", "down"), help="up: LOCAL -> REMOTE; down: REMOTE -> LOCAL")
    p.add_argument("local", metavar="LOCAL")
    p.add_argument("remote", metavar="REMOTE")
    p.add_argument("--include", action="append", default=[], metavar="GLOB", help="only matching files")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="never matching files")
    p.add_argument("--dry-run", action="store_true", help="list what would be copied; copy nothing")
    p.set_defaults(func=cmd_sync)

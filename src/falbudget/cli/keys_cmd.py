"""`falbudget keys create|list|revoke`: the virtual keys of `falbudget proxy`."""

from __future__ import annotations

import argparse
import datetime as dt
import json

from falbudget import clock
from falbudget.cli.common import Outcome, Subparsers, UsageError, add_format_option

CREATE_EPILOG = """\
examples:
  falbudget keys create --tag user=ann --tag project=web --config falbudget.yaml

The key is printed once, on stdout; the ledger keeps only its SHA-256 digest. A request through
the proxy with 'Authorization: Bearer KEY' carries the key's tags and the tag key=ID, so caps on
user, project or key apply to it."""


def register(subparsers: Subparsers) -> None:
    from falbudget.cli.common import add_guard_options

    parser = subparsers.add_parser(
        "keys",
        help="virtual keys for falbudget proxy: create (shown once), list, revoke",
        description="The proxy's virtual keys, kept in the ledger as digests.",
    )
    commands = parser.add_subparsers(dest="keys_command", metavar="COMMAND")
    create = commands.add_parser(
        "create",
        help="make a key with tags; print it once",
        description="Make a virtual key carrying the given tags and print it once.",
        epilog=CREATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    create.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="TAG=VALUE",
        help="a tag the key's requests carry, e.g. user=ann (repeat for more)",
    )
    add_guard_options(create)
    create.set_defaults(func=run_create)
    listing = commands.add_parser("list", help="every key: id, tags, created, revoked")
    add_guard_options(listing)
    add_format_option(listing)
    listing.set_defaults(func=run_list)
    revoke = commands.add_parser("revoke", help="revoke a key by its id; at once, for good")
    revoke.add_argument("key_id", metavar="ID", help="the key's id (from keys list)")
    add_guard_options(revoke)
    revoke.set_defaults(func=run_revoke)
    parser.set_defaults(func=_missing_command)


def _missing_command(args: argparse.Namespace) -> Outcome:
    raise UsageError("keys: a command is required: create, list, revoke")


def parse_tags(items: list[str]) -> dict[str, str]:
    from falbudget.proxy.keys import RESERVED_TAGS

    tags: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name.isidentifier() or not value:
            raise UsageError(f"--tag={item!r} is not allowed: TAG=VALUE such as user=ann")
        if name in RESERVED_TAGS:
            raise UsageError(
                f"--tag={item!r} is not allowed: the proxy sets {', '.join(RESERVED_TAGS)} itself"
            )
        if name in tags:
            raise UsageError(f"--tag={item!r} is not allowed: tag {name!r} is given twice")
        tags[name] = value
    if not tags:
        raise UsageError("keys create needs at least one --tag TAG=VALUE, such as user=ann")
    return tags


def run_create(args: argparse.Namespace) -> Outcome:
    from falbudget.cli.budget_cmd import guard_from_args
    from falbudget.proxy.keys import digest, new_key

    tags = parse_tags(args.tag)
    guard = guard_from_args(args)
    try:
        key_id, key = new_key()
        guard.ledger.create_key(key_id, digest(key), tags, now=clock.now())
    finally:
        guard.close()
    shown = ", ".join(f"{k}={v}" for k, v in tags.items())
    return Outcome(key, message=f"key {key_id} ({shown}): shown once, store it now")


def run_list(args: argparse.Namespace) -> Outcome:
    from tabulate import tabulate

    from falbudget.cli.budget_cmd import guard_from_args

    guard = guard_from_args(args, read_only=True)
    try:
        keys = guard.ledger.api_keys()
    finally:
        guard.close()
    if args.format == "json":
        rows = [
            {
                "id": k.id,
                "tags": k.tags,
                "created_at": _when(k.created_at),
                "revoked_at": None if k.revoked_at is None else _when(k.revoked_at),
            }
            for k in keys
        ]
        return Outcome(json.dumps(rows, ensure_ascii=False))
    if not keys:
        return Outcome("no keys")
    table = [
        [
            k.id,
            ", ".join(f"{n}={v}" for n, v in k.tags.items()),
            _when(k.created_at),
            "-" if k.revoked_at is None else _when(k.revoked_at),
        ]
        for k in keys
    ]
    return Outcome(tabulate(table, headers=["id", "tags", "created", "revoked"]))


def run_revoke(args: argparse.Namespace) -> Outcome:
    from falbudget.cli.budget_cmd import guard_from_args

    guard = guard_from_args(args)
    try:
        key = guard.ledger.revoke_key(args.key_id, now=clock.now())
    finally:
        guard.close()
    assert key.revoked_at is not None
    return Outcome(f"key {key.id} revoked at {_when(key.revoked_at)}")


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")

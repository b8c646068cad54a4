"""The ``nbh`` command, for operators.

Every error is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import grp
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

from . import config, tokens
from .names import BadName, Instance, check_course
from .systemd import Systemd, SystemdError

CONTAINER_USER = "nbh-jupyter"
WEB_USER = "nbh"
DROPIN_DIR = Path("/etc/systemd/system/nbh-jupyter@.service.d")


class CommandError(Exception):
    """Ends the command with this message and exit status 1."""


def connect() -> Systemd:
    return Systemd.connect(os.environ.get("NBH_BUS_ADDRESS"))


async def start(args) -> None:
    instance = Instance(args.course, args.student)
    async with await connect() as systemd:
        await systemd.start_instance(instance)
    print(f"{instance.path}: started, {instance.base_url}")


async def stop(args) -> None:
    instance = Instance(args.course, args.student)
    async with await connect() as systemd:
        await systemd.stop_instance(instance)
    print(f"{instance.path}: stopped")


def _since(usec: int) -> str:
    if not usec:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(usec / 1e6))


def _memory(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 2**20:.1f}M"


async def status(args) -> None:
    if args.student and not args.course:
        raise CommandError("a student needs a course")
    async with await connect() as systemd:
        if args.student:
            units = [Instance(args.course, args.student).service]
        else:
            units = await systemd.list_instances()
        rows = []
        for unit in units:
            instance = Instance.from_unit(unit)
            if args.course and instance.course != check_course(args.course):
                continue
            state = await systemd.state(unit)
            rows.append((instance.course, instance.student, f"{state.ActiveState}/{state.SubState}",
                         _since(state.since_usec), _memory(state.MemoryCurrent)))
    header = ("COURSE", "STUDENT", "STATE", "SINCE", "MEMORY")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def logs(args) -> int:
    instance = Instance(args.course, args.student)
    argv = ["journalctl", "--no-pager", "-o", "short-iso"]
    for unit in instance.units:
        argv += ["--unit", unit]
    if args.follow:
        argv.append("--follow")
    if args.lines is not None:
        argv += ["--lines", str(args.lines)]
    try:
        return subprocess.run(argv).returncode
    except FileNotFoundError:
        raise CommandError("journalctl is not installed") from None


def setup(args) -> None:
    """What the package scripts do after the accounts exist; idempotent."""
    if os.geteuid() != 0:
        raise CommandError("setup must run as root")
    try:
        web_group = grp.getgrnam(WEB_USER).gr_gid
        pwd.getpwnam(CONTAINER_USER)
    except KeyError as error:
        raise CommandError(f"missing account {error} (systemd-sysusers nbhosting.conf)") from None
    settings = config.load()
    if tokens.create_secret(group_id=web_group):
        print(f"created {tokens.SECRET_PATH}")
    DROPIN_DIR.mkdir(parents=True, exist_ok=True)
    (DROPIN_DIR / "50-limits.conf").write_text(settings.limits.dropin())
    if Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "daemon-reload"], check=True)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="nbh", description="nbhosting: Jupyter for MOOC students")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def pair(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        sub.add_argument("course")
        sub.add_argument("student")
        return sub

    pair("start", "start a student's server and wait until it answers").set_defaults(run=start)
    pair("stop", "stop a student's server (its socket keeps listening)").set_defaults(run=stop)
    sub = commands.add_parser("status", help="state, since when and memory of the servers")
    sub.add_argument("course", nargs="?")
    sub.add_argument("student", nargs="?")
    sub.set_defaults(run=status)
    sub = pair("logs", "a student's server journal")
    sub.add_argument("-f", "--follow", action="store_true")
    sub.add_argument("-n", "--lines", type=int)
    sub.set_defaults(run=logs)
    commands.add_parser("setup", help="host secret and unit limits from the configuration (root)").set_defaults(run=setup)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        result = args.run(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return result or 0
    except (BadName, CommandError, SystemdError, config.ConfigError) as error:
        print(f"nbh: {error}", file=sys.stderr)
        return 1
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"nbh: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

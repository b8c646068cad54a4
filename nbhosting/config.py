"""nbhosting's configuration: /etc/nbhosting/nbhosting.toml, or $NBH_CONFIG.

Read with tomllib and checked at once: an unknown key or a bad value stops
the program with one message naming the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

DEFAULT_PATH = Path("/etc/nbhosting/nbhosting.toml")


class ConfigError(ValueError):
    pass


_BYTES = re.compile(r"[0-9]+[KMGT]?|infinity")
_PERCENT = re.compile(r"[0-9]+%")


@dataclass(frozen=True)
class Limits:
    """Of one student's server: systemd's MemoryMax=, CPUQuota=, TasksMax=."""

    memory_max: str = "2G"
    cpu_quota: str = "100%"
    tasks_max: int = 512

    def check(self) -> None:
        if not _BYTES.fullmatch(self.memory_max):
            raise ConfigError(f"limits.memory_max: {self.memory_max!r} is not a size like 2G")
        if not _PERCENT.fullmatch(self.cpu_quota):
            raise ConfigError(f"limits.cpu_quota: {self.cpu_quota!r} is not a percentage like 100%")
        if self.tasks_max < 16:
            raise ConfigError(f"limits.tasks_max: {self.tasks_max} is below 16")

    def dropin(self) -> str:
        return (
            "# Written by `nbh setup` from nbhosting.toml [limits]; edit that file instead.\n"
            "[Service]\n"
            f"MemoryMax={self.memory_max}\n"
            f"CPUQuota={self.cpu_quota}\n"
            f"TasksMax={self.tasks_max}\n"
        )


@dataclass(frozen=True)
class Config:
    limits: Limits = Limits()


_SECTIONS = {"limits": Limits}


def _section(name: str, cls: type, table: object):
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: expected a table")
    known = {f.name: f for f in fields(cls)}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{name}.{key}: unknown key")
        expected = type(known[key].default)
        if type(value) is not expected:
            raise ConfigError(f"{name}.{key}: expected {expected.__name__}, got {type(value).__name__}")
    section = cls(**table)
    section.check()
    return section


def load(path: Path | None = None) -> Config:
    path = path or Path(os.environ.get("NBH_CONFIG", DEFAULT_PATH))
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return Config()
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: {error}") from None
    for key in data:
        if key not in _SECTIONS:
            raise ConfigError(f"{key}: unknown section")
    return Config(**{key: _section(key, _SECTIONS[key], value) for key, value in data.items()})

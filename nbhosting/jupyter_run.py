"""ExecStart of nbh-jupyter@.service: check the pair, then exec podman.

It runs as the containers' account at every server start, so it imports
little and does only what a unit setting cannot: derive the server's token
and build the podman command line for the pair.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import config, courses, events, tokens
from .names import BadName, Instance
from .workspace import workspace_dir

PODMAN = "/usr/bin/podman"
DEFAULT_IMAGE = "localhost/nbhosting/jupyter:test"


def podman_argv(instance: Instance, course: courses.Course, runtime_dir: str, image: str,
                lms_origins: str) -> list[str]:
    return [
        PODMAN, "run",
        # conmon stays as the unit's main process, the podman client exits;
        # READY=1 comes from Jupyter itself (the image's nbh_ready extension).
        "--detach", "--sdnotify=container",
        "--rm", "--replace", "--name", instance.container,
        "--cidfile", f"{runtime_dir}/cid",
        "--network=none",
        "--security-opt", "label=disable",
        "--label", f"nbh.instance={instance.path}",
        "--env", f"NBH_BASE_URL={instance.base_url}",
        # the LMS may frame the notebook (Content-Security-Policy)
        "--env", f"NBH_FRAME_ANCESTORS={lms_origins}",
        "--volume", f"{runtime_dir}:/run/nbh",
        "--volume", f"{workspace_dir(instance)}:/home/jovyan/work",
        "--volume", f"{course.path}:/home/jovyan/course:ro",
        image,
    ]


def prepare(instance: Instance, runtime_dir: str) -> None:
    """Write the token where the container reads it, readable by it only."""
    token = tokens.instance_token(tokens.read_secret(), instance)
    path = Path(runtime_dir) / "token"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "w") as file:
        file.write(token)
    Path(runtime_dir, "cid").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        (pair,) = argv
        instance = Instance.from_path(pair)
    except (ValueError, BadName) as error:
        print(f"nbh-jupyter-run: {error}", file=sys.stderr)
        return 2
    runtime_dir = os.environ.get("RUNTIME_DIRECTORY", "")
    if not runtime_dir:
        print("nbh-jupyter-run: no RUNTIME_DIRECTORY (run it from nbh-jupyter@.service)", file=sys.stderr)
        return 2
    try:
        course = courses.load(instance.course)
        settings = config.load()
        prepare(instance, runtime_dir)
    except (courses.UnknownCourse, courses.CourseError, config.ConfigError, OSError, ValueError) as error:
        print(f"nbh-jupyter-run: {error}", file=sys.stderr)
        return 1
    image = course.image or os.environ.get("NBH_IMAGE") or DEFAULT_IMAGE
    events.send("start", instance, f"starting {instance.path} with {image}", NBH_IMAGE=image)
    argv = podman_argv(instance, course, runtime_dir, image, " ".join(settings.web.lms_origins))
    os.execv(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main())

"""A student's notebook as a read-only page, for their course's staff.

nbh-render.socket (Accept=yes) starts one nbh-render@.service per
connection, the connection as its stdin and stdout: the front end writes
the notebook's bytes as saved, closes its side, and reads the answer, a
first line ``ok`` then the page, or ``error: <why>``.

The notebook is the student's: it is parsed (JSON, markdown, HTML outputs)
there, in a process of its own with no account (DynamicUser=), no network,
no file of the host's to read or write, bounded in memory and time; never
in the front end, which holds the staff sessions. The student's server is
not started and nothing of theirs is written.

The page is nbconvert's, as the image's nbh_menus renders a shared page:
the lab template, nothing from a CDN, served under shares.POLICY (nothing
in it runs). Images that a markdown cell names by a relative path are not
inlined: this process reads no file; figures saved in the notebook are.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import warnings
from collections.abc import AsyncIterator, Iterator

SOCKET = "/run/nbhosting/render.sock"
# Past this a notebook is offered for download only: the render's memory
# (MemoryMax= of nbh-render@.service) is a few times the notebook's size.
INPUT_MAX = 32 << 20
# A page is the notebook's text and figures, and nbconvert's styles (~300 KiB).
OUTPUT_MAX = 2 * INPUT_MAX
PIECE = 256 << 10
# Longer than RuntimeMaxSec= of the unit, which stops a render first.
TIMEOUT = 90
NO_CDN = {"require_js_url": "", "mathjax_url": ""}


class RenderError(Exception):
    """The notebook could not be rendered: says why, for a 4xx page."""


class RenderBusy(RenderError):
    """No answer: every render slot taken (MaxConnections=) or none running."""


def render(data: bytes) -> bytes:
    """The page of a notebook's bytes."""
    import nbconvert  # noqa: PLC0415 -- costly: the render's alone, not the front end's
    import nbformat  # noqa: PLC0415

    with warnings.catch_warnings():
        # about the student's notebook (a cell without an id...): nothing to act on
        warnings.simplefilter("ignore")
        try:
            notebook = nbformat.reads(data.decode("utf-8"), as_version=4)
        except UnicodeDecodeError as error:
            raise RenderError(f"not UTF-8 text: {error}") from None
        except Exception as error:  # noqa: BLE001 -- NotJSONError, ValidationError, TypeError...
            why = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
            raise RenderError(f"not a notebook: {why}") from None
        exporter = nbconvert.HTMLExporter(template_name="lab", **NO_CDN)
        try:
            body, _ = exporter.from_notebook_node(notebook)
        except Exception as error:  # noqa: BLE001 -- nbconvert raises anything on a notebook it cannot read
            raise RenderError(f"nbconvert: {type(error).__name__}: {str(error)[:200]}") from None
    return body.encode("utf-8")


def main() -> int:
    """nbh-render (ExecStart of nbh-render@.service): stdin to stdout."""
    data = sys.stdin.buffer.read(INPUT_MAX + 1)
    try:
        if len(data) > INPUT_MAX:
            raise RenderError(f"larger than {INPUT_MAX} bytes")
        page = render(data)
    except RenderError as error:
        print(f"nbh-render: {error}", file=sys.stderr)  # the unit's journal
        sys.stdout.buffer.write(f"error: {error}\n".encode())
        return 1
    sys.stdout.buffer.write(b"ok\n" + page)
    return 0


async def page_of(pieces: Iterator[bytes], socket: str = SOCKET) -> AsyncIterator[bytes]:
    """The page of a notebook read a piece at a time, as it comes from the
    render; RenderError before anything comes if there is no page."""
    loop = asyncio.get_running_loop()
    try:
        reader, writer = await asyncio.open_unix_connection(socket, limit=PIECE)
    except OSError as error:
        raise RenderBusy(f"no render ({socket}): {error}") from None
    try:
        async with asyncio.timeout(TIMEOUT):
            with contextlib.suppress(ConnectionError):  # refused (too many at once): no answer below
                while piece := await loop.run_in_executor(None, next, pieces, b""):
                    writer.write(piece)
                    await writer.drain()
                writer.write_eof()
            try:
                status = await reader.readline()
            except ConnectionError:
                status = b""
            if not status:
                raise RenderBusy("the render closed without an answer (too many at once?)")
            if status != b"ok\n":
                raise RenderError(status.decode("utf-8", "replace").removeprefix("error: ").strip())
            sent = 0
            while piece := await reader.read(PIECE):
                sent += len(piece)
                if sent > OUTPUT_MAX:
                    raise RenderError(f"a page larger than {OUTPUT_MAX} bytes")
                yield piece
    except TimeoutError:
        raise RenderError(f"no page after {TIMEOUT} s") from None
    finally:
        writer.close()

"""The staff's view of a student's notebook (nbhosting/render.py): the page
nbconvert makes, and what the front end makes of each answer of the render.
The render as installed (nbh-render@.service, its confinement, its refusals
on the staff page) is tested in test_staff.py."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys

import pytest

from nbhosting import render

NOTEBOOK = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
    {"cell_type": "markdown", "id": "m1", "metadata": {}, "source": "# Week 1\n\n![figure](figures/plot.png)"},
    {"cell_type": "code", "id": "c1", "metadata": {}, "execution_count": 1, "source": "print('my answer')",
     "outputs": [{"output_type": "stream", "name": "stdout", "text": "my answer\n"},
                 {"output_type": "display_data", "metadata": {},
                  "data": {"text/html": "<script>window.ran = 1</script><b>html output</b>"}}]},
]}


def test_the_page_holds_the_cells_and_asks_for_nothing_elsewhere():
    page = render.render(json.dumps(NOTEBOOK).encode()).decode()
    assert "Week 1" in page and "my answer" in page and "<b>html output</b>" in page
    # nothing loaded from elsewhere (the template's own scripts do not run: shares.POLICY)
    assert re.findall(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=[\"']?(?:https?:)?//", page) == []
    assert '<img alt="figure" src="figures/plot.png"/>' in page  # not inlined: the render reads no file


@pytest.mark.parametrize(("data", "why"), [
    (b"not a notebook", "not a notebook"),
    (b"\xff\xfe", "not UTF-8"),
    (b'{"nbformat": 4, "cells": 3}', "not a notebook"),
    (b'{"nbformat": 4, "nbformat_minor": 5, "cells": [{"cell_type": "code", "source": 5}]}', "not a notebook"),
])
def test_what_is_not_a_notebook_is_refused_with_a_reason(data, why):
    with pytest.raises(render.RenderError, match=why):
        render.render(data)


def test_the_command_answers_ok_and_the_page_or_error_and_why():
    command = [sys.executable, "-c", "import sys; from nbhosting import render; sys.exit(render.main())"]
    done = subprocess.run(command, input=json.dumps(NOTEBOOK).encode(), capture_output=True, check=False)
    assert done.returncode == 0 and done.stdout.startswith(b"ok\n<!DOCTYPE html>"), done.stderr[-500:]
    done = subprocess.run(command, input=b"[1, 2]", capture_output=True, check=False)
    assert done.returncode == 1 and done.stdout.startswith(b"error: not a notebook"), done
    assert b"nbh-render: not a notebook" in done.stderr


async def answered(tmp_path, answer: bytes | None, notebook: bytes = b"{}") -> tuple[bytes, bytes]:
    """What page_of makes of `answer` (None: the connection closed unread), and what the render read."""
    socket = str(tmp_path / "render.sock")
    read = bytearray()

    async def serve(reader, writer):
        if answer is not None:
            read.extend(await reader.read())
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(serve, socket)
    try:
        pieces = b"".join([piece async for piece in render.page_of(iter([notebook[:3], notebook[3:]]), socket)])
    finally:
        server.close()
    return pieces, bytes(read)


def test_a_page_is_passed_on_and_the_notebook_sent_whole(tmp_path):
    page, read = asyncio.run(answered(tmp_path, b"ok\n<html>page</html>", b'{"cells": []}'))
    assert (page, read) == (b"<html>page</html>", b'{"cells": []}')


def test_an_error_says_why(tmp_path):
    with pytest.raises(render.RenderError, match="^not a notebook: x$"):
        asyncio.run(answered(tmp_path, b"error: not a notebook: x\n"))


def test_no_answer_is_busy(tmp_path):
    with pytest.raises(render.RenderBusy):
        asyncio.run(answered(tmp_path, None))

    async def nowhere():
        return [piece async for piece in render.page_of(iter([b"{}"]), str(tmp_path / "none.sock"))]

    with pytest.raises(render.RenderBusy, match="no render"):
        asyncio.run(nowhere())


def test_a_page_past_the_bound_is_cut(tmp_path, monkeypatch):
    monkeypatch.setattr(render, "OUTPUT_MAX", 10)
    with pytest.raises(render.RenderError, match="larger than 10"):
        asyncio.run(answered(tmp_path, b"ok\n" + b"x" * 100))

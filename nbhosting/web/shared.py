"""GET /shared/<course>/<id>/<page>: a student's shared page (nbhosting/shares.py)."""

from __future__ import annotations

import asyncio

import tornado.iostream

from .. import shares
from .base import BaseHandler


class SharedPageHandler(BaseHandler):
    async def get(self, course: str, share_id: str, page: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            opened = await loop.run_in_executor(None, shares.open_page_within, course, share_id, page)
        except shares.NoSuchPage as error:
            raise self.refuse(404, "No such shared page", str(error), NBH_COURSE=course) from None
        # Anyone may link to it or frame it; nothing in it runs.
        self.set_header("Content-Security-Policy", shares.POLICY)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Length", opened[1])
        # A piece at a time, each sent before the next is read: as much
        # memory for a slow reader as for a fast one.
        pieces = shares.pieces(opened)
        try:
            while piece := await loop.run_in_executor(None, next, pieces, b""):
                self.write(piece)
                await self.flush()
        except tornado.iostream.StreamClosedError:
            return  # the reader went away
        finally:
            pieces.close()
        self.finish()

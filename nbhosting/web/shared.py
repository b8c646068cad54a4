"""GET /shared/<course>/<id>/<page>: a student's shared page (nbhosting/shares.py)."""

from __future__ import annotations

import asyncio

from .. import shares
from .base import BaseHandler


class SharedPageHandler(BaseHandler):
    async def get(self, course: str, share_id: str, page: str) -> None:
        try:
            opened = await asyncio.get_running_loop().run_in_executor(
                None, shares.open_page_within, course, share_id, page)
        except shares.NoSuchPage as error:
            raise self.refuse(404, "No such shared page", str(error), NBH_COURSE=course) from None
        # Anyone may link to it or frame it; nothing in it runs.
        self.set_header("Content-Security-Policy", shares.POLICY)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        await self.send_file(opened)

"""Asking a student's Jupyter server, on the socket it listens on
(nbh-upstream@.socket, there only while the server runs; never the student's
listening socket, which would start a stopped server). The cull, the
sampler, the kernel pre-start and the staff pages ask this way.

A server runs a student's code: its answers are read with bounds, and a bad
one is an AskError for that server alone.
"""

from __future__ import annotations

import asyncio
import json

import httpx

from .names import Instance

ASK_TIMEOUT = 10
# A server's answers come from a student's container: read this much at most.
ANSWER_MAX = 1 << 20


class AskError(Exception):
    pass


async def get_json(instance: Instance, url: str, token: str, method: str = "GET",
                   body: dict | None = None) -> object:
    """GET (or `method`, with a JSON body) on the server's own socket
    (nbh-upstream@), its JSON answer bounded in size and time.

    The server runs a student's code and may answer anything: a refusal, a
    never-ending or compressed body, garbage. Each of those is an AskError
    for this server alone.
    """
    headers = {"Authorization": f"token {token}", "Accept-Encoding": "identity"}
    try:
        async with client(instance) as http:
            return await asyncio.wait_for(
                _read(http, method, f"http://localhost{instance.base_url}{url}", headers, body), ASK_TIMEOUT)
    except (httpx.HTTPError, OSError, TimeoutError) as error:
        raise AskError(f"cannot ask {instance.path}: {error or type(error).__name__}") from None


def client(instance: Instance) -> httpx.AsyncClient:
    # Plain HTTP on a unix socket: verify=False only spares loading a CA
    # bundle for every server asked (40 ms each), there is no TLS to verify.
    transport = httpx.AsyncHTTPTransport(uds=instance.upstream_socket, verify=False)
    return httpx.AsyncClient(transport=transport, timeout=ASK_TIMEOUT)


async def _read(client: httpx.AsyncClient, method: str, url: str, headers: dict, body: dict | None) -> object:
    async with client.stream(method, url, headers=headers, json=body) as response:
        if response.status_code != 200:
            raise AskError(f"answered {response.status_code} to {url}")
        if response.headers.get("Content-Encoding", "identity") != "identity":
            raise AskError(f"answered with Content-Encoding {response.headers['Content-Encoding'][:40]!r}")
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > ANSWER_MAX:
                raise AskError(f"answered more than {ANSWER_MAX} bytes to {url}")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise AskError(f"answered no JSON to {url}") from None

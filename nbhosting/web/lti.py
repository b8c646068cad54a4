"""LTI 1.3 launches: ``/lti/login``, ``/lti/launch`` and ``/lti/jwks``.

Thin over nbhosting/lti.py, which checks everything; after the checks a
launch is an entry like the others (StudentHandler.entry, then the start,
the "starting" page and the redirect with the server's token). On beside
the entry URLs, whatever their mode (web.auth): a login from an issuer that
no registration (`nbh lti add`) names is refused.

Every refusal is a 403 page and a ``refused`` journal event with
NBH_PLATFORM= (or NBH_ISSUER=, when there is no such platform) and
NBH_REASON=; a launch is a ``launch`` event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import tornado.httputil
import tornado.web

from .. import events, lti, ltinames
from ..systemd import SystemdError
from .base import Frontend
from .entry import StudentHandler

log = logging.getLogger("nbh-web")
# An id_token is a few KiB (Canvas's, with its claims, up to about 8):
# twice that, and no more, for the launch alone (nginx says the same).
LAUNCH_MAX_BODY = 16 * 1024
KEYS_UNIT = "nbh-lti-keys.service"
# At most one fetch of the platforms' keys this often, however many tokens
# name a key the cache does not have: a launch past it waits for the next.
KEYS_REFRESH_EVERY = 2.0


class LtiTool:
    """What the LTI handlers share: the used nonces, the platforms' keys, the tool's JWKS."""

    def __init__(self, frontend: Frontend):
        self.frontend = frontend
        self.nonces = lti.Nonces()
        self._refresh: asyncio.Task | None = None
        self._refreshed = -KEYS_REFRESH_EVERY
        try:
            self.jwks: dict | None = lti.tool_jwks(lti.TOOL_KEY_PATH.read_bytes())
        except (OSError, ValueError) as error:
            log.warning("no LTI tool key (%s): /lti/jwks answers 404; `nbh setup` makes it", error)
            self.jwks = None

    async def key(self, platform: lti.Platform, kid: str | None):
        """The platform's key of this kid: from the cache, else after a fetch."""
        key = lti.cached_key(platform, kid)
        if key is None:
            if self._refresh is None or self._refresh.done():
                self._refresh = asyncio.ensure_future(self._fetch())
            await asyncio.shield(self._refresh)
            key = lti.cached_key(platform, kid)
        return key

    async def _fetch(self) -> None:
        """nbh-lti-keys.service fetches them: nbh-web has no network."""
        await asyncio.sleep(max(0.0, self._refreshed + KEYS_REFRESH_EVERY - time.monotonic()))
        try:
            await (await self.frontend.systemd()).start(KEYS_UNIT)
        except SystemdError as error:  # one platform's keys may have come all the same
            log.warning("%s: %s", KEYS_UNIT, error)
        finally:
            self._refreshed = time.monotonic()


class LtiHandler(StudentHandler):
    @property
    def tool(self) -> LtiTool:
        return self.application.settings["lti"]

    def refused(self, error: Exception, platform: lti.Platform | None = None,
                issuer: str | None = None) -> tornado.web.HTTPError:
        reason = str(error)
        return self.refuse(403, "Not allowed", reason, NBH_PLATFORM=platform.name if platform else None,
                           NBH_ISSUER=issuer if platform is None else None, NBH_REASON=reason)

    def misconfigured(self, error: lti.RegistrationError) -> tornado.web.HTTPError:
        return tornado.web.HTTPError(500, "%s", str(error), reason="This site's LTI set-up is broken")


class LoginHandler(LtiHandler):
    """The OIDC login initiation: off to the platform's authorization endpoint."""

    allowed_methods = ("GET", "POST")

    def get(self) -> None:
        issuer = self.get_argument("iss", None)
        try:
            login = lti.login(self.frontend.secret, issuer, self.get_argument("client_id", None),
                              self.get_argument("login_hint", None), self.get_argument("lti_deployment_id", None))
        except lti.Refused as error:
            raise self.refused(error, issuer=issuer) from None
        except lti.RegistrationError as error:
            raise self.misconfigured(error) from None
        redirect_uri = f"{self.frontend.settings.web.public_url}/lti/launch"
        self.redirect(login.redirect(redirect_uri, self.get_argument("login_hint"),
                                     self.get_argument("lti_message_hint", None)))

    post = get


@tornado.web.stream_request_body
class LaunchHandler(LtiHandler):
    """The platform's form POST of the id_token: check it, then open the notebook."""

    allowed_methods = ("POST",)

    def prepare(self) -> None:
        super().prepare()
        self.request.connection.set_max_body_size(LAUNCH_MAX_BODY)
        self.body = b""

    def data_received(self, chunk: bytes) -> None:
        self.body += chunk  # the connection stops at LAUNCH_MAX_BODY

    def form(self) -> dict[str, str]:
        fields: dict[str, list[bytes]] = {}
        content_type = self.request.headers.get("Content-Type", "")
        if not content_type.startswith("application/x-www-form-urlencoded"):
            raise self.refuse(400, "Bad request", f"launch: body of type {content_type[:60]!r}, not a form")
        tornado.httputil.parse_body_arguments(content_type, self.body, fields, {})
        return {name: self.decode_argument(values[0], name) for name, values in fields.items() if values}

    async def post(self) -> None:
        form = self.form()
        platform = None
        try:
            state = lti.read_state(self.frontend.secret, form.get("state"))
            platform = lti.load(state["platform"])
            if platform.removed:
                raise lti.Refused(f"launch: platform {platform.name!r} is removed")
            key = await self.tool.key(platform, lti.token_key_id(form.get("id_token")))
            if key is None:
                raise lti.Refused("launch: the id_token's key is not in the platform's JWKS")
            launch = lti.verify(form["id_token"], key, platform, state)
            first = await asyncio.get_running_loop().run_in_executor(
                None, self.tool.nonces.use, platform.issuer, launch.nonce, launch.expires)
            if not first:
                raise lti.Refused("launch: the nonce was used already (a replay)")
        except lti.Refused as error:
            raise self.refused(error, platform) from None
        except lti.RegistrationError as error:
            raise self.misconfigured(error) from None
        instance, found, path = self.entry(launch.course, launch.notebook, launch.student)
        try:
            ltinames.remember(instance, launch.name)
        except OSError as error:  # the operator's to mend; not the student's launch
            log.error("cannot keep the name of %s: %s", instance.path, error)
        events.send("launch", instance, f"{instance.path}: LTI launch from {platform.name} of {path}",
                    NBH_PLATFORM=platform.name, NBH_NOTEBOOK=path)
        await self.start_and_open(instance, found, path, None)


class JwksHandler(LtiHandler):
    """The tool's public key, for the platforms that ask for it."""

    def get(self) -> None:
        if self.tool.jwks is None:
            raise self.refuse(404, "Not found", "no LTI tool key")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(self.tool.jwks))

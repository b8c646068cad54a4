"""A fake LTI 1.3 platform (an LMS), on a loopback port of the test process:
its own RSA keys and JWKS, and an authorization endpoint that answers the
tool's OIDC redirect with the form an LMS auto-submits into its iframe.

Its id_tokens are made with PyJWT, as a platform would; `id_token` takes
changes to them, so that the tests can make every kind of bad launch.
"""

from __future__ import annotations

import html
import http.server
import json
import threading
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from nbhosting import lti

CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
CLIENT_ID = "nbhosting-tool"
DEPLOYMENT_ID = "deployment-1"


def new_key() -> tuple[str, rsa.RSAPrivateKey]:
    return uuid.uuid4().hex[:12], rsa.generate_private_key(public_exponent=65537, key_size=2048)


class FakePlatform:
    """Call `start()`; `url` is then its issuer, `.../jwks` and `.../auth` its endpoints."""

    def __init__(self):
        self.keys = [new_key()]  # the JWKS lists them all; the last one signs
        self.links: dict[str, dict] = {}  # resource link id -> custom parameters
        self.auth_requests: list[dict] = []
        self.jwks_fetches = 0
        self.server: http.server.ThreadingHTTPServer | None = None

    # -- the platform's side of the protocol ----------------------------------

    def rotate(self) -> str:
        """A new signing key, listed in the JWKS next to the old ones; its kid."""
        self.keys.append(new_key())
        return self.keys[-1][0]

    def jwks(self) -> dict:
        keys = []
        for kid, key in self.keys:
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def claims(self, nonce: str, sub: str | None, custom: dict | None = None) -> dict:
        now = int(time.time())
        claims = {
            "iss": self.url, "aud": CLIENT_ID, "azp": CLIENT_ID, "iat": now, "exp": now + 300, "nonce": nonce,
            CLAIM + "message_type": "LtiResourceLinkRequest", CLAIM + "version": "1.3.0",
            CLAIM + "deployment_id": DEPLOYMENT_ID,
            CLAIM + "resource_link": {"id": "link-1"},
            CLAIM + "roles": ["http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"],
            CLAIM + "target_link_uri": "https://tool.example.org/lti/launch",
        }
        if sub is not None:
            claims["sub"] = sub
        if custom is not None:
            claims[CLAIM + "custom"] = custom
        return claims

    def id_token(self, nonce: str, sub: str | None, custom: dict | None = None, key=None, kid: str | None = None,
                 changes: dict | None = None) -> str:
        """Signed with the platform's current key, or `key`; `changes` to the claims,
        lti_x for the LTI claim x (a value of None removes the claim)."""
        claims = self.claims(nonce, sub, custom)
        for name, value in (changes or {}).items():
            name = CLAIM + name.removeprefix("lti_") if name.startswith("lti_") else name
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        signing_kid, signing_key = self.keys[-1]
        return jwt.encode(claims, key or signing_key, algorithm="RS256", headers={"kid": kid or signing_kid})

    def student(self, sub: str, name: str = "fake") -> str:
        """The student name nbhosting gives this user, the platform registered under that name."""
        registered = lti.Platform(name, self.url, (CLIENT_ID,), (DEPLOYMENT_ID,), self.url + "/auth",
                                  self.url + "/jwks")
        return lti.student_name(registered, sub)

    def login_query(self, sub: str, link: str) -> dict:
        """What the platform sends the tool's login initiation URL."""
        return {"iss": self.url, "client_id": CLIENT_ID, "login_hint": sub, "lti_message_hint": link,
                "target_link_uri": "https://tool.example.org/lti/launch", "lti_deployment_id": DEPLOYMENT_ID}

    def authorize(self, query: dict) -> tuple[int, str]:
        """The OIDC authorization endpoint: the auto-submitting form of the launch."""
        self.auth_requests.append(query)
        expected = {"scope": "openid", "response_type": "id_token", "response_mode": "form_post",
                    "prompt": "none", "client_id": CLIENT_ID}
        wrong = {k: query.get(k) for k, v in expected.items() if query.get(k) != v}
        if wrong or not query.get("redirect_uri") or not query.get("state") or not query.get("nonce"):
            return 400, f"bad authorization request: {wrong or query}"
        custom = self.links.get(query.get("lti_message_hint", ""))
        token = self.id_token(query["nonce"], query["login_hint"], custom)
        fields = "".join(f'<input type="hidden" name="{name}" value="{html.escape(value, quote=True)}">'
                         for name, value in (("id_token", token), ("state", query["state"])))
        return 200, (f'<!doctype html><html><body><form id="launch" method="post" '
                     f'action="{html.escape(query["redirect_uri"], quote=True)}">{fields}</form>'
                     '<script>document.getElementById("launch").submit()</script></body></html>')

    # -- on loopback --------------------------------------------------------------

    def start(self) -> FakePlatform:
        platform = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                parts = urlsplit(self.path)
                if parts.path == "/jwks":
                    platform.jwks_fetches += 1
                    self.reply(200, json.dumps(platform.jwks()), "application/json")
                elif parts.path == "/auth":
                    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                    self.reply(*platform.authorize(query), "text/html; charset=utf-8")
                else:
                    self.reply(404, "not found", "text/plain")

            def reply(self, status: int, body: str, content_type: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}" if self.server else "https://platform.example.org"

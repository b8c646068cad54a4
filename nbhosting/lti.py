"""LTI 1.3 launches, tool side: what a platform (an LMS) may do, checked
without a server, so that the web handlers (web/lti.py) and the tests call
the same functions.

The flow (IMS LTI 1.3 Core, and the OpenID Connect third-party-initiated
login it builds on): the platform sends the browser to ``/lti/login`` with
its issuer and client id; the tool answers with a redirect to the
platform's authorization endpoint carrying a ``state`` and a ``nonce``; the
platform POSTs back to ``/lti/launch`` an ``id_token``, a JWT it signs with
a key of its JWKS, naming the user (``sub``) and the resource.

Nothing is kept between the two steps but the nonce: ``state`` is a JWT the
tool signs (under the host secret) that carries the platform, the client id
and the nonce, so no cookie is needed in the LMS's cross-site iframe, where
a browser keeps none. Each nonce is used once, remembered in a small SQLite
file until it expires, so that a restart of nbh-web forgets none.

A platform's keys are fetched by ``nbh lti fetch-keys`` (nbh-lti-keys.service:
nbh-web has no network) into a cache that nbh-web reads; a token signed by
a key the cache does not list makes nbh-web fetch them again, which is how
a platform's key rotation is followed.

The student of a launch is ``lti.<platform>.<digest of issuer and sub>``:
valid for names.py, the same at every launch, different between platforms
by its middle part (one name per issuer, kept even after ``nbh lti
remove``), and never a name that the other entries accept, which refuse
the ``lti.`` prefix (``is_lti_student``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from . import files, ltinames, names, paths, tokens

# Registrations, one TOML file per platform, written by `nbh lti add` (root).
PLATFORMS_DIR = paths.CONF_DIR / "lti"
# The tool's own RSA key (`nbh setup`), published at /lti/jwks.
TOOL_KEY_PATH = paths.CONF_DIR / "lti-key.pem"
# nbh's own (tmpfiles): the platforms' keys as fetched, and the used nonces.
STATE_DIR = paths.DATA_DIR / "lti"
KEYS_DIR = STATE_DIR / "keys"
NONCES_PATH = STATE_DIR / "nonces.sqlite"

LEEWAY = 60  # seconds of clock difference allowed on exp and iat
STATE_TTL = 600  # from the login to the launch: the platform may ask the user to log in
KEYS_MAX_AGE = 3600  # a platform's keys are fetched again after this long (a key it withdrew)
KEYS_MAX_BYTES = 256 * 1024
ALGORITHM = "RS256"  # the one LTI 1.3 names (LTI Security Framework, 5.1.3)

CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
MESSAGE_TYPE = "LtiResourceLinkRequest"
VERSION = "1.3.0"
STUDENT_PREFIX = "lti."
# A platform's name is the middle of its students' names: short, no dot.
PLATFORM_RE = re.compile(r"[a-z0-9]{1,10}")
DIGEST_CHARS = 24  # of base32: 120 bits of SHA-256
URL_MAX = 1024
VALUE_MAX = 255
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Where the launch's resource may also come from: <site>/lti/launch/<course>/<notebook>.
TARGET_PREFIX = "/lti/launch/"


class Refused(Exception):
    """A login or a launch that is not accepted; the message says why."""


class RegistrationError(ValueError):
    """A registration that cannot be made or read; the message names it."""


@dataclass(frozen=True)
class Platform:
    """One LMS that may launch students: its name here, and what it told us."""

    name: str
    issuer: str
    client_ids: tuple[str, ...]
    deployment_ids: tuple[str, ...]
    auth_url: str
    jwks_url: str
    # The courses it may launch: their names, or "*" for every course. None
    # by default: a platform (its admins, its course authors) launches only
    # into the courses the site's admin gave it.
    courses: tuple[str, ...] = ()
    # Kept after `nbh lti remove`, so that the name stays its issuer's.
    removed: bool = False

    def may_launch(self, course: str) -> bool:
        return "*" in self.courses or course in self.courses

    def check(self) -> Platform:
        if not isinstance(self.name, str) or not PLATFORM_RE.fullmatch(self.name):
            raise RegistrationError(f"bad platform name {self.name!r}: 1 to 10 lower-case letters or digits")
        for what, url in (("issuer", self.issuer), ("auth URL", self.auth_url), ("JWKS URL", self.jwks_url)):
            _check_url(what, url)
        for what, values in (("client id", self.client_ids), ("deployment id", self.deployment_ids)):
            if not values:
                raise RegistrationError(f"a platform needs at least one {what}")
            for value in values:
                if not isinstance(value, str) or not value or len(value) > VALUE_MAX or not value.isprintable():
                    raise RegistrationError(f"bad {what} {value!r}: 1 to {VALUE_MAX} printable characters")
        for course in self.courses:
            if course != "*" and not (isinstance(course, str) and names.COURSE_RE.fullmatch(course)):
                raise RegistrationError(f"bad course {course!r}: a course name, or * for every course")
        return self


def _check_url(what: str, url: object) -> None:
    """https, or http on loopback (a platform on this host, as in the tests)."""
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:
        parts = None
    if (parts is None or len(url) > URL_MAX or not url.isprintable() or " " in url or not parts.hostname
            or parts.fragment or not (parts.scheme == "https"
                                      or (parts.scheme == "http" and parts.hostname in LOOPBACK))):
        raise RegistrationError(f"bad {what} {url!r}: an https:// URL (http:// on loopback only)")


# -- registrations ------------------------------------------------------------

def _path(name: str, folder: Path) -> Path:
    return folder / f"{name}.toml"


def load(name: str, folder: Path = PLATFORMS_DIR) -> Platform:
    if not PLATFORM_RE.fullmatch(name):
        raise RegistrationError(f"bad platform name {name!r}: 1 to 10 lower-case letters or digits")
    path = _path(name, folder)
    try:
        data = tomllib.loads(path.read_text())
        platform = Platform(name, data["issuer"], tuple(data["client_ids"]), tuple(data["deployment_ids"]),
                            data["auth_url"], data["jwks_url"], tuple(data.get("courses", ())),
                            removed=data.get("removed", False))
    except FileNotFoundError:
        raise RegistrationError(f"no platform {name!r}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise RegistrationError(f"{path}: {error!r}") from None
    try:
        return platform.check()
    except RegistrationError as error:
        raise RegistrationError(f"{path}: {error}") from None


def all_platforms(folder: Path = PLATFORMS_DIR, removed: bool = False) -> list[Platform]:
    found = [load(path.stem, folder) for path in sorted(folder.glob("*.toml")) if PLATFORM_RE.fullmatch(path.stem)]
    return [platform for platform in found if removed or not platform.removed]


def by_issuer(issuer: str, folder: Path = PLATFORMS_DIR) -> Platform | None:
    return next((p for p in all_platforms(folder) if p.issuer == issuer), None)


def add(platform: Platform, folder: Path = PLATFORMS_DIR) -> None:
    """Register, or change a registration (the same name and issuer); a name
    keeps its issuer for good, and an issuer its name, so that no student's
    name ever changes platform."""
    platform.check()
    for known in all_platforms(folder, removed=True):
        if known.name == platform.name and known.issuer != platform.issuer:
            raise RegistrationError(f"platform name {platform.name!r} is {known.issuer!r}'s (its students' "
                                    f"names are lti.{platform.name}.*): choose another name")
        if known.issuer == platform.issuer and known.name != platform.name:
            raise RegistrationError(f"issuer {platform.issuer!r} was registered as {known.name!r}: "
                                    f"use that name, so that its students keep theirs")
    _write(platform, folder)


def remove(name: str, folder: Path = PLATFORMS_DIR) -> Platform:
    """No more launches from it; the registration stays, marked, for its name."""
    platform = load(name, folder)
    if platform.removed:
        raise RegistrationError(f"platform {name!r} is removed already")
    removed = Platform(**{**platform.__dict__, "removed": True})
    _write(removed, folder)
    return removed


def _write(platform: Platform, folder: Path) -> None:
    """By hand, as tomllib only reads; json.dumps writes valid TOML strings and arrays."""
    lines = [f"# Written by `nbh lti`.\nissuer = {json.dumps(platform.issuer)}\n"]
    for key in ("client_ids", "deployment_ids", "auth_url", "jwks_url", "courses"):
        value = getattr(platform, key)
        lines.append(f"{key} = {json.dumps(list(value) if isinstance(value, tuple) else value)}\n")
    if platform.removed:
        lines.append("removed = true\n")
    _replace(_path(platform.name, folder), "".join(lines), 0o644)


def _replace(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    files.replace_text(path, text, mode)


# -- students -------------------------------------------------------------------

def student_name(platform: Platform, sub: str) -> str:
    """lti.<platform>.<24 base32 of SHA-256(issuer, sub)>, at most 39 characters."""
    digest = hashlib.sha256(f"{platform.issuer}\n{sub}".encode()).digest()
    code = base64.b32encode(digest).decode().lower()[:DIGEST_CHARS]
    return names.check_student(f"{STUDENT_PREFIX}{platform.name}.{code}")


def is_lti_student(student: str) -> bool:
    """A name only launches make: the other entries refuse it."""
    return student.startswith(STUDENT_PREFIX)


# -- the tool's own key -------------------------------------------------------------

def new_tool_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def tool_jwks(pem: bytes) -> dict:
    """The public half, as the JWKS platforms fetch from /lti/jwks."""
    public = serialization.load_pem_private_key(pem, password=None).public_key()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))  # text: PyJWT 2.6 (Debian 12) has no as_dict
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"keys": [{**jwk, "kid": hashlib.sha256(der).hexdigest()[:16], "use": "sig", "alg": ALGORITHM}]}


# -- the login: state and nonce ---------------------------------------------------

def _state_key(secret: bytes) -> bytes:
    """Its own key, so that no other MAC of the host secret passes for a state."""
    return tokens.derive(secret, "lti-state")


@dataclass(frozen=True)
class Login:
    platform: Platform
    client_id: str
    nonce: str
    state: str

    def redirect(self, redirect_uri: str, login_hint: str, message_hint: str | None) -> str:
        """The platform's authorization endpoint, with the OIDC request (LTI Security Framework 5.1.1.2)."""
        query = {"scope": "openid", "response_type": "id_token", "response_mode": "form_post",
                 "prompt": "none", "client_id": self.client_id, "redirect_uri": redirect_uri,
                 "login_hint": login_hint, "state": self.state, "nonce": self.nonce}
        if message_hint is not None:
            query["lti_message_hint"] = message_hint
        url = self.platform.auth_url
        return f"{url}{'&' if urlsplit(url).query else '?'}{urlencode(query)}"


def login(secret: bytes, issuer: str | None, client_id: str | None, login_hint: str | None,
          deployment_id: str | None, folder: Path = PLATFORMS_DIR, now: float | None = None) -> Login:
    """Check a login initiation and make its state and nonce."""
    if not issuer:
        raise Refused("login: no iss")
    platform = by_issuer(issuer, folder)
    if platform is None:
        raise Refused(f"login: unknown issuer {issuer[:100]!r}")
    if client_id is None and len(platform.client_ids) == 1:
        client_id = platform.client_ids[0]
    if client_id not in platform.client_ids:
        raise Refused(f"login: unknown client_id {str(client_id)[:100]!r}")
    if deployment_id is not None and deployment_id not in platform.deployment_ids:
        raise Refused(f"login: unknown deployment id {deployment_id[:100]!r}")
    if not login_hint:
        raise Refused("login: no login_hint")
    nonce = secrets.token_urlsafe(24)
    state = jwt.encode({"platform": platform.name, "client_id": client_id, "nonce": nonce,
                        "exp": int((now or time.time()) + STATE_TTL)}, _state_key(secret), algorithm="HS256")
    return Login(platform, client_id, nonce, state)


def read_state(secret: bytes, state: str | None) -> dict:
    if not state:
        raise Refused("launch: no state")
    try:
        return jwt.decode(state, _state_key(secret), algorithms=["HS256"],
                          options={"require": ["exp", "platform", "client_id", "nonce"]})
    except jwt.ExpiredSignatureError:
        raise Refused("launch: the state has expired (the login was too long ago)") from None
    except jwt.InvalidTokenError as error:
        raise Refused(f"launch: bad state ({error})") from None


# -- the launch -------------------------------------------------------------------

def token_key_id(id_token: str | None) -> str | None:
    """The kid in the token's header, to pick the key; malformed tokens are refused."""
    if not id_token:
        raise Refused("launch: no id_token")
    try:
        header = jwt.get_unverified_header(id_token)
    except jwt.InvalidTokenError as error:
        raise Refused(f"launch: malformed id_token ({error})") from None
    if header.get("alg") != ALGORITHM:
        raise Refused(f"launch: id_token signed with {str(header.get('alg'))[:20]!r}, not {ALGORITHM}")
    kid = header.get("kid")
    return kid if isinstance(kid, str) else None


@dataclass(frozen=True)
class Launch:
    platform: Platform
    student: str
    course: str
    notebook: str
    nonce: str
    expires: int  # the id_token's or the state's exp, the later: its nonce is kept until then
    name: str = ""  # as people know the student, if the LMS sent it (ltinames.py)


def verify(id_token: str, key: rsa.RSAPublicKey, platform: Platform, state: dict) -> Launch:
    """The id_token of a launch, checked against the platform and the state of its login."""
    client_id = state["client_id"]
    try:
        claims = jwt.decode(id_token, key, algorithms=[ALGORITHM], audience=client_id, issuer=platform.issuer,
                            leeway=LEEWAY, options={"require": ["exp", "iat", "iss", "aud", "sub", "nonce"]})
    except jwt.InvalidSignatureError:
        raise Refused("launch: bad signature") from None
    except jwt.ExpiredSignatureError:
        raise Refused("launch: the id_token has expired") from None
    except jwt.InvalidAudienceError:
        raise Refused(f"launch: the id_token is not for client id {client_id!r}") from None
    except jwt.InvalidIssuerError:
        raise Refused("launch: the id_token is not from the platform of its login") from None
    except jwt.MissingRequiredClaimError as error:
        raise Refused(f"launch: no {error.claim} in the id_token") from None
    except jwt.InvalidTokenError as error:
        raise Refused(f"launch: bad id_token ({error})") from None
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if (len(audiences) > 1 or "azp" in claims) and claims.get("azp") != client_id:
        raise Refused("launch: the id_token's azp is not our client id")
    if not isinstance(claims["nonce"], str) or not hmac.compare_digest(claims["nonce"], state["nonce"]):
        raise Refused("launch: the nonce is not that of the login")
    if claims.get(CLAIM + "message_type") != MESSAGE_TYPE:
        raise Refused(f"launch: message type {str(claims.get(CLAIM + 'message_type'))[:40]!r}, not {MESSAGE_TYPE}")
    if claims.get(CLAIM + "version") != VERSION:
        raise Refused(f"launch: LTI version {str(claims.get(CLAIM + 'version'))[:20]!r}, not {VERSION}")
    if claims.get(CLAIM + "deployment_id") not in platform.deployment_ids:
        raise Refused(f"launch: unknown deployment id {str(claims.get(CLAIM + 'deployment_id'))[:100]!r}")
    if not isinstance(claims["sub"], str) or not claims["sub"]:
        raise Refused("launch: no sub in the id_token (an anonymous launch)")
    course, notebook = resource(claims)
    if not platform.may_launch(course):
        raise Refused(f"launch: platform {platform.name!r} may not launch into the course {course[:40]!r} "
                      f"(nbh lti add --courses)")
    return Launch(platform, student_name(platform, claims["sub"]), course, notebook, claims["nonce"],
                  max(int(claims["exp"]), int(state["exp"])), ltinames.from_claims(claims))


def resource(claims: dict) -> tuple[str, str]:
    """Course and notebook: custom parameters course= and notebook=, else the
    target link URI <site>/lti/launch/<course>/<notebook>. Names are checked later."""
    custom = claims.get(CLAIM + "custom")
    if isinstance(custom, dict) and "course" in custom and "notebook" in custom:
        course, notebook = custom["course"], custom["notebook"]
        if isinstance(course, str) and isinstance(notebook, str):
            return course, notebook
        raise Refused("launch: custom course and notebook are not strings")
    target = claims.get(CLAIM + "target_link_uri")
    path = urlsplit(target).path if isinstance(target, str) else ""
    course, _, notebook = unquote(path.removeprefix(TARGET_PREFIX)).partition("/")
    if not path.startswith(TARGET_PREFIX) or not course or not notebook:
        raise Refused("launch: no course and notebook (custom parameters course= and notebook=, "
                      f"or a target link URI <site>{TARGET_PREFIX}<course>/<notebook>)")
    return course, notebook


# -- the platforms' keys, as fetched ---------------------------------------------------

def keys_path(platform: Platform, folder: Path = KEYS_DIR) -> Path:
    return folder / f"{platform.name}.json"


def cached_key(platform: Platform, kid: str | None, folder: Path = KEYS_DIR,
               now: float | None = None) -> rsa.RSAPublicKey | None:
    """The platform's key of this kid from the cache; None if it is not there,
    or the cache is too old to trust a key's absence from the platform."""
    path = keys_path(platform, folder)
    try:
        if (now or time.time()) - path.stat().st_mtime > KEYS_MAX_AGE:
            return None
        keys = jwt.PyJWKSet.from_json(path.read_text())
    except (OSError, ValueError, jwt.PyJWTError):
        return None
    usable = [key for key in keys.keys if key.key_type == "RSA" and key.public_key_use in (None, "sig")]
    if kid is None:  # a platform with one key may leave kid out
        return usable[0].key if len(usable) == 1 else None
    return next((key.key for key in usable if key.key_id == kid), None)


def fetch_keys(platform: Platform, folder: Path = KEYS_DIR) -> int:
    """GET the platform's JWKS and keep it, if it is one; the number of keys."""
    import httpx  # noqa: PLC0415 -- only the fetcher needs it

    with httpx.Client(timeout=10, follow_redirects=False) as client, \
            client.stream("GET", platform.jwks_url, headers={"Accept": "application/json"}) as response:
        if response.status_code != 200:
            raise RegistrationError(f"{platform.name}: {platform.jwks_url}: HTTP {response.status_code}")
        body = b""
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > KEYS_MAX_BYTES:
                raise RegistrationError(f"{platform.name}: {platform.jwks_url}: over {KEYS_MAX_BYTES} bytes")
    try:
        keys = jwt.PyJWKSet.from_json(body.decode())
    except (ValueError, jwt.PyJWTError) as error:
        raise RegistrationError(f"{platform.name}: {platform.jwks_url}: not a JWKS ({error})") from None
    _replace(keys_path(platform, folder), body.decode(), 0o640)
    return len(keys.keys)


# -- nonces, used once ----------------------------------------------------------------

class Nonces:
    """Nonces already used, until they expire, in SQLite: a restart forgets none."""

    def __init__(self, path: Path = NONCES_PATH):
        self.path = path

    def _connect(self) -> contextlib.closing[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS nonces (issuer TEXT, nonce TEXT, expires INTEGER, "
                   "PRIMARY KEY (issuer, nonce))")
        return contextlib.closing(db)

    def use(self, issuer: str, nonce: str, expires: float, now: float | None = None) -> bool:
        """True the first time; False if the nonce was used already."""
        now = now or time.time()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM nonces WHERE expires < ?", (int(now),))
                db.execute("INSERT INTO nonces VALUES (?, ?, ?)", (issuer, nonce, int(expires) + LEEWAY))
            except sqlite3.IntegrityError:
                db.execute("ROLLBACK")
                return False
            db.execute("COMMIT")
            return True

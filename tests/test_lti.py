"""LTI 1.3, the protocol's logic (nbhosting/lti.py), without a server: the
launches of a fake platform, good and bad, checked by the same functions
that nbh-web calls. The whole launch against nbh-web: test_lti_launch.py."""

from __future__ import annotations

import json
import os
import time
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nbhosting import access, config, lti, names

from .lti_platform import CLIENT_ID, DEPLOYMENT_ID, FakePlatform, new_key

SECRET = b"s" * 64
CUSTOM = {"course": "python-mooc", "notebook": "w1/w1-s1-c1-intro"}
OFFLINE = FakePlatform()  # not started: for its URLs only


def registration(platform: FakePlatform, name: str = "fake", **changes) -> lti.Platform:
    fields = {"name": name, "issuer": platform.url, "client_ids": (CLIENT_ID,),
              "deployment_ids": (DEPLOYMENT_ID,), "auth_url": platform.url + "/auth",
              "jwks_url": platform.url + "/jwks", "courses": ("*",)}
    return lti.Platform(**{**fields, **changes})


@pytest.fixture
def folders(tmp_path):
    return tmp_path / "platforms", tmp_path / "keys"


@pytest.fixture
def platform(folders):
    """A fake platform, registered, its keys in the cache as nbh-lti-keys.service leaves them."""
    fake = FakePlatform()
    registered = registration(fake)
    lti.add(registered, folders[0])
    cache_keys(fake, registered, folders[1])
    return fake, registered


def cache_keys(fake: FakePlatform, registered: lti.Platform, folder) -> None:
    folder.mkdir(exist_ok=True)
    lti.keys_path(registered, folder).write_text(json.dumps(fake.jwks()))


def log_in(registered: lti.Platform, folders, **changes) -> lti.Login:
    arguments = {"issuer": registered.issuer, "client_id": CLIENT_ID, "login_hint": "u1",
                 "deployment_id": DEPLOYMENT_ID, **changes}
    return lti.login(SECRET, folder=folders[0], **arguments)


def launch(platform, folders, token_changes=None, sub="student-1", custom=CUSTOM, key=None, kid=None):
    """Login, then the launch's checks as nbh-web makes them; the Launch or Refused."""
    fake, registered = platform
    login = log_in(registered, folders)
    # times are computed now, not when the tests were collected
    changes = {name: value() if callable(value) else value for name, value in (token_changes or {}).items()}
    token = fake.id_token(login.nonce, sub, custom, key=key, kid=kid, changes=changes)
    state = lti.read_state(SECRET, login.state)
    found = lti.cached_key(lti.load(state["platform"], folders[0]), lti.token_key_id(token), folders[1])
    if found is None:
        raise lti.Refused("launch: the id_token's key is not in the platform's JWKS")
    return lti.verify(token, found, registered, state)


# -- the launch ---------------------------------------------------------------------

def test_a_good_launch_names_the_student_course_and_notebook(platform, folders):
    result = launch(platform, folders)
    assert (result.course, result.notebook) == ("python-mooc", "w1/w1-s1-c1-intro")
    assert result.student == lti.student_name(platform[1], "student-1")
    assert result.expires > time.time()


def test_a_platform_launches_only_into_the_courses_it_was_given(folders):
    """A platform's admins (or a course author there) choose the resource of a
    launch: nbhosting lets it name only the courses the site gave it."""
    fake = FakePlatform()
    given = registration(fake, courses=("python-mooc",))
    lti.add(given, folders[0])
    cache_keys(fake, given, folders[1])
    assert lti.load("fake", folders[0]).courses == ("python-mooc",)
    assert launch((fake, given), folders).course == "python-mooc"
    with pytest.raises(lti.Refused, match="may not launch into the course 'other'"):
        launch((fake, given), folders, custom={"course": "other", "notebook": "a"})
    with pytest.raises(lti.Refused, match="may not launch into the course 'python-mooc'"):
        launch((fake, registration(fake, courses=())), folders)  # the default: none


def test_the_login_redirects_with_the_oidc_request(platform, folders):
    fake, registered = platform
    login = log_in(registered, folders)
    url = login.redirect("https://tool.example.org/lti/launch", "u1", "link-1")
    assert url.startswith(fake.url + "/auth?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query == {"scope": "openid", "response_type": "id_token", "response_mode": "form_post", "prompt": "none",
                     "client_id": CLIENT_ID, "redirect_uri": "https://tool.example.org/lti/launch",
                     "login_hint": "u1", "lti_message_hint": "link-1", "state": login.state, "nonce": login.nonce}
    assert fake.authorize(query)[0] == 200


@pytest.mark.parametrize("changes, reason", [
    ({"issuer": "https://other.example.org"}, "unknown issuer"),
    ({"issuer": None}, "no iss"),
    ({"client_id": "someone-else"}, "unknown client_id"),
    ({"deployment_id": "deployment-2"}, "unknown deployment id"),
    ({"login_hint": ""}, "no login_hint"),
])
def test_bad_logins_are_refused(platform, folders, changes, reason):
    with pytest.raises(lti.Refused, match=reason):
        log_in(platform[1], folders, **changes)


def test_a_login_without_client_id_takes_the_platforms_only_one(platform, folders):
    assert log_in(platform[1], folders, client_id=None).client_id == CLIENT_ID


@pytest.mark.parametrize("changes, reason", [
    ({"aud": "someone-else"}, "not for client id"),
    ({"aud": ["someone-else", CLIENT_ID], "azp": "someone-else"}, "azp"),
    ({"aud": ["someone-else", CLIENT_ID], "azp": None}, "azp"),
    ({"exp": lambda: int(time.time()) - lti.LEEWAY - 10}, "expired"),
    ({"iat": lambda: int(time.time()) + lti.LEEWAY + 60}, "bad id_token"),
    ({"iat": None}, "no iat"),
    ({"nonce": "another"}, "nonce is not that of the login"),
    ({"nonce": None}, "no nonce"),
    ({"iss": "https://other.example.org"}, "not from the platform"),
    ({"lti_deployment_id": "deployment-2"}, "unknown deployment id"),
    ({"lti_deployment_id": None}, "unknown deployment id"),
    ({"lti_message_type": "LtiDeepLinkingRequest"}, "message type"),
    ({"lti_version": "1.1"}, "LTI version"),
])
def test_bad_tokens_are_refused(platform, folders, changes, reason):
    with pytest.raises(lti.Refused, match=reason):
        launch(platform, folders, changes)


def test_a_token_with_the_exp_just_past_is_within_the_leeway(platform, folders):
    assert launch(platform, folders, {"exp": lambda: int(time.time()) - lti.LEEWAY // 2}).student


def test_a_token_without_sub_is_refused(platform, folders):
    with pytest.raises(lti.Refused, match="no sub"):
        launch(platform, folders, sub=None)


def test_a_token_signed_by_another_key_is_refused(platform, folders):
    fake, _ = platform
    _, stranger = new_key()
    with pytest.raises(lti.Refused, match="bad signature"):
        launch(platform, folders, key=stranger)  # with the kid of the platform's key
    with pytest.raises(lti.Refused, match="not in the platform's JWKS"):
        launch(platform, folders, key=stranger, kid="no-such-kid")


def test_other_algorithms_are_refused(platform, folders):
    fake, registered = platform
    login = log_in(registered, folders)
    claims = fake.claims(login.nonce, "student-1", CUSTOM)
    for token in (jwt.encode(claims, "k" * 32, algorithm="HS256"), jwt.encode(claims, None, algorithm="none")):
        with pytest.raises(lti.Refused, match="not RS256"):
            lti.token_key_id(token)
    for garbage in ("", None, "a.b.c", "x" * 100):
        with pytest.raises(lti.Refused):
            lti.token_key_id(garbage)


def test_a_tampered_state_is_refused(platform, folders):
    login = log_in(platform[1], folders)
    head, payload, mac = login.state.split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    other = jwt.utils.base64url_encode(json.dumps({**claims, "nonce": "mine"}).encode()).decode()
    for state in (f"{head}.{other}.{mac}", login.state[:-2], "", None,
                  jwt.encode(claims, b"x" * 32, algorithm="HS256")):
        with pytest.raises(lti.Refused, match="state"):
            lti.read_state(SECRET, state)
    assert lti.read_state(SECRET, login.state)["nonce"] == login.nonce


def test_an_expired_state_is_refused(platform, folders):
    login = lti.login(SECRET, platform[1].issuer, CLIENT_ID, "u1", None, folders[0],
                      now=time.time() - lti.STATE_TTL - 1)
    with pytest.raises(lti.Refused, match="state has expired"):
        lti.read_state(SECRET, login.state)


def test_key_rotation_needs_the_new_jwks(platform, folders):
    fake, registered = platform
    fake.rotate()
    with pytest.raises(lti.Refused, match="not in the platform's JWKS"):
        launch(platform, folders)  # the cache is the old JWKS: nbh-web fetches again
    cache_keys(fake, registered, folders[1])
    assert launch(platform, folders).student


def test_an_old_key_cache_is_not_trusted(platform, folders):
    fake, registered = platform
    kid = fake.keys[-1][0]
    assert lti.cached_key(registered, kid, folders[1]) is not None
    later = time.time() + lti.KEYS_MAX_AGE + 1
    assert lti.cached_key(registered, kid, folders[1], now=later) is None
    assert lti.cached_key(registered, None, folders[1]) is not None  # one key: no kid needed
    fake.rotate()
    cache_keys(fake, registered, folders[1])
    assert lti.cached_key(registered, None, folders[1]) is None  # two: which one?


@pytest.mark.parametrize("claims, expected", [
    ({lti.CLAIM + "custom": {"course": "c1", "notebook": "w1/nb"}}, ("c1", "w1/nb")),
    ({lti.CLAIM + "target_link_uri": "https://site/lti/launch/c1/w1/n%20b"}, ("c1", "w1/n b")),
    ({lti.CLAIM + "custom": {"course": "c1"}, lti.CLAIM + "target_link_uri": "https://s/lti/launch/c2/nb"},
     ("c2", "nb")),
])
def test_the_resource_from_custom_parameters_or_the_target_link(claims, expected):
    assert lti.resource(claims) == expected


@pytest.mark.parametrize("claims", [{}, {lti.CLAIM + "target_link_uri": "https://site/lti/launch"},
                                    {lti.CLAIM + "target_link_uri": "https://site/other/c1/nb"},
                                    {lti.CLAIM + "custom": {"course": 1, "notebook": []}}])
def test_no_resource_is_refused(claims):
    with pytest.raises(lti.Refused):
        lti.resource(claims)


# -- nonces ---------------------------------------------------------------------------

def test_a_nonce_is_used_once_even_after_a_restart(tmp_path):
    path, expires = tmp_path / "nonces.sqlite", time.time() + 300
    assert lti.Nonces(path).use("https://a", "n1", expires)
    assert not lti.Nonces(path).use("https://a", "n1", expires)  # a new object: nbh-web restarted
    assert lti.Nonces(path).use("https://b", "n1", expires)  # another platform's


def test_expired_nonces_are_forgotten(tmp_path):
    nonces = lti.Nonces(tmp_path / "nonces.sqlite")
    assert nonces.use("https://a", "n1", time.time() + 10)
    assert not nonces.use("https://a", "n1", time.time() + 10, now=time.time() + lti.LEEWAY)
    assert nonces.use("https://a", "n1", time.time() + 10, now=time.time() + 20 + lti.LEEWAY)


# -- registrations ------------------------------------------------------------------

def test_registrations_add_list_remove(folders):
    one, two = registration(OFFLINE), registration(OFFLINE, "moodle", issuer="https://moodle.example.org")
    lti.add(one, folders[0])
    lti.add(two, folders[0])
    assert lti.all_platforms(folders[0]) == [one, two]
    assert lti.by_issuer("https://moodle.example.org", folders[0]) == two
    lti.remove("moodle", folders[0])
    assert lti.all_platforms(folders[0]) == [one]
    assert lti.by_issuer("https://moodle.example.org", folders[0]) is None
    assert [p.removed for p in lti.all_platforms(folders[0], removed=True)] == [False, True]


def test_a_platforms_name_stays_its_issuers(folders):
    """So that no student's name ever goes over to another platform."""
    first = registration(OFFLINE, "moodle", issuer="https://moodle.example.org")
    lti.add(first, folders[0])
    changed = lti.Platform(**{**first.__dict__, "client_ids": ("one", "two")})
    lti.add(changed, folders[0])  # the same name and issuer: a change
    assert lti.all_platforms(folders[0]) == [changed]
    lti.remove("moodle", folders[0])
    with pytest.raises(lti.RegistrationError, match="choose another name"):
        lti.add(registration(OFFLINE, "moodle", issuer="https://other.example.org"), folders[0])
    with pytest.raises(lti.RegistrationError, match="use that name"):
        lti.add(registration(OFFLINE, "moodle2", issuer="https://moodle.example.org"), folders[0])
    lti.add(first, folders[0])  # back, under its own name
    assert lti.all_platforms(folders[0]) == [first]


@pytest.mark.parametrize("changes", [
    {"name": "Moodle"}, {"name": "a.b"}, {"name": "x" * 11}, {"name": ""},
    {"issuer": "http://lms.example.org"}, {"issuer": "ftp://lms"}, {"issuer": "https://"},
    {"jwks_url": "https://lms.example.org/jwks#x"}, {"auth_url": "https://lms example.org/"},
    {"client_ids": ()}, {"deployment_ids": ("",)}, {"client_ids": ("a\nb",)},
    {"courses": ("../x",)}, {"courses": ("*all",)}, {"courses": ("",)},
])
def test_bad_registrations(changes):
    with pytest.raises(lti.RegistrationError):
        registration(OFFLINE, **changes).check()


# -- students -------------------------------------------------------------------------

@given(st.text(min_size=1, max_size=255))
def test_an_lti_student_name_is_valid_stable_and_refused_by_the_other_entries(sub):
    registered = registration(OFFLINE, "abcdefghij")  # the longest platform name
    student = lti.student_name(registered, sub)
    assert names.check_student(student) == student == lti.student_name(registered, sub)
    assert names.Instance("python-mooc", student)  # fits a unit name and a socket path
    assert lti.is_lti_student(student)
    for mode in ("signed", "referer"):
        web = config.Web(lms_origins=("https://lms.example.org",), auth=mode)
        expires = int(time.time()) + 60
        signature = access.signature(b"k", "c", "n", student, expires)
        with pytest.raises(access.Refused, match="LTI"):  # even signed, even with a long id
            access.authorize(web, b"k", "c", "n", student, "https://lms.example.org/", str(expires), signature)


@given(st.text(min_size=1, max_size=100), st.text(min_size=1, max_size=100))
def test_two_platforms_never_share_a_student(sub1, sub2):
    """Whatever the subs, even equal: the platform's name is the middle of the name."""
    one = registration(OFFLINE, "moodle", issuer="https://moodle.example.org")
    two = registration(OFFLINE, "edx", issuer="https://edx.example.org")
    assert lti.student_name(one, sub1) != lti.student_name(two, sub2)
    assert lti.student_name(one, sub1).split(".")[1] == "moodle"


def test_students_of_one_platform_differ():
    registered = registration(OFFLINE)
    students = {lti.student_name(registered, str(n)) for n in range(10000)}
    assert len(students) == 10000


def test_fun_ids_are_never_lti_students():
    """Open edX anonymous ids (hex) and Moodle numbers cannot start with 'lti.'."""
    for student in (os.urandom(16).hex(), "12345", "lti-1", "ltix", "LTI_1"):
        assert not lti.is_lti_student(student)


# -- the tool's key ---------------------------------------------------------------------

def test_the_tools_jwks_verifies_what_its_key_signs():
    pem = lti.new_tool_key()
    published = lti.tool_jwks(pem.encode())
    (jwk,) = published["keys"]
    assert jwk["kty"] == "RSA" and jwk["alg"] == "RS256" and "d" not in jwk and len(jwk["kid"]) == 16
    token = jwt.encode({"iss": "nbhosting"}, pem, algorithm="RS256", headers={"kid": jwk["kid"]})
    key = jwt.PyJWKSet.from_dict(published)[jwk["kid"]]
    assert jwt.decode(token, key, algorithms=["RS256"]) == {"iss": "nbhosting"}

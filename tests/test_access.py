"""Authorization of entries: referers and signed URLs (pure logic)."""

import pytest

from nbhosting import access, config

KEY = b"k" * 32
WEB = config.Web(lms_origins=("https://lms.example.org",))


def test_signature_round_trip():
    query = access.signed_query(KEY, "c", "w1/x", "s", ttl=60, now=1000)
    expires, signature = (part.split("=")[1] for part in query.split("&"))
    assert expires == "1060"
    access.check_signature(KEY, "c", "w1/x", "s", expires, signature, now=1059)


@pytest.mark.parametrize("change, message", [
    ({"course": "d"}, "bad signature"),
    ({"notebook": "w1/x.ipynb"}, "bad signature"),
    ({"student": "t"}, "bad signature"),
    ({"key": b"o" * 32}, "bad signature"),
    ({"now": 1061}, "expired"),
    ({"expires": "10e9"}, "bad expiry"),
    ({"expires": None}, "not signed"),
    ({"key": None}, "no LMS key"),
])
def test_bad_signatures(change, message):
    args = {"key": KEY, "course": "c", "notebook": "w1/x", "student": "s", "now": 1000}
    signature = access.signature(KEY, "c", "w1/x", "s", 1060)
    args = args | change
    expires = change.get("expires", "1060")
    with pytest.raises(access.Refused, match=message):
        access.check_signature(args["key"], args["course"], args["notebook"], args["student"],
                               expires, signature, now=args["now"])


@pytest.mark.parametrize("referer", ["https://lms.example.org/courses/x", "https://lms.example.org"])
def test_allowed_referers(referer):
    access.check_referer(WEB, referer)


@pytest.mark.parametrize("referer", [None, "", "https://lms.example.org.evil.net/",
                                     "http://lms.example.org/", "https://evil.org/?https://lms.example.org"])
def test_refused_referers(referer):
    with pytest.raises(access.Refused):
        access.check_referer(WEB, referer)


def test_configuration_chooses_what_is_required():
    both = config.Web(lms_origins=WEB.lms_origins, require_signature=True)
    with pytest.raises(access.Refused, match="not signed"):
        access.authorize(both, KEY, "c", "n", "s", "https://lms.example.org/", None, None)
    signature_only = config.Web(require_referer=False, require_signature=True)
    query = access.signed_query(KEY, "c", "n", "s", ttl=60)
    expires, signature = (part.split("=")[1] for part in query.split("&"))
    access.authorize(signature_only, KEY, "c", "n", "s", None, expires, signature)

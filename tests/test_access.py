"""Authorization of entries: signed URLs and referer mode (pure logic)."""

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


@pytest.mark.parametrize("expires", ["²", "1²", "١٠٠٠٠", "-1060", "+1060", " 1060", "1060 ", "0x424",
                                     "9" * 13, "1e9", "", "1060\n"])
def test_malformed_expiries_are_refused(expires):
    signature = access.signature(KEY, "c", "n", "s", 1060)
    with pytest.raises(access.Refused, match="bad expiry|not signed"):
        access.check_signature(KEY, "c", "n", "s", expires, signature, now=1000)


@pytest.mark.parametrize("given", ["é" * 64, "ü", "\udcff" * 64, "A" * 64, "0" * 63, "0" * 65, "0" * 6400,
                                   " " + "0" * 63])
def test_malformed_signatures_are_refused(given):
    with pytest.raises(access.Refused, match="malformed signature"):
        access.check_signature(KEY, "c", "n", "s", "1060", given, now=1000)


def test_a_non_ascii_signature_no_longer_raises_type_error():
    """hmac.compare_digest raises TypeError on a non-ASCII str: that was a 500."""
    with pytest.raises(TypeError):
        access.hmac.compare_digest("0" * 64, "é" * 64)
    with pytest.raises(access.Refused):
        access.check_signature(KEY, "c", "n", "s", "1060", "é" * 64, now=1000)


def test_a_malformed_referer_is_refused():
    with pytest.raises(access.Refused, match="malformed Referer"):
        access.check_referer(WEB, "http://[lms.example.org/")


def signed_args(student: str = "s") -> tuple[str, str]:
    query = access.signed_query(KEY, "c", "n", student, ttl=60)
    expires, signature = (part.split("=")[1] for part in query.split("&"))
    return expires, signature


LONG_ID = "0123456789abcdef0123456789abcdef"  # an Open edX anonymous id
LMS_PAGE = "https://lms.example.org/courses/x"


def test_signed_mode_needs_a_signature_whatever_the_referer():
    signed = config.Web(lms_origins=WEB.lms_origins)
    assert signed.auth == "signed"
    with pytest.raises(access.Refused, match="not signed"):
        access.authorize(signed, KEY, "c", "n", LONG_ID, LMS_PAGE, None, None)
    access.authorize(signed, KEY, "c", "n", "s", None, *signed_args())


def test_referer_mode_needs_the_lms_page_and_a_long_id():
    referer = config.Web(lms_origins=WEB.lms_origins, auth="referer")
    access.authorize(referer, KEY, "c", "n", LONG_ID, LMS_PAGE, None, None)
    access.authorize(referer, KEY, "c", "n", "s" * 16, LMS_PAGE, None, None)
    with pytest.raises(access.Refused, match="shorter than web.min_student_id"):
        access.authorize(referer, KEY, "c", "n", "s" * 15, LMS_PAGE, None, None)
    with pytest.raises(access.Refused, match="not an allowed LMS origin"):
        access.authorize(referer, KEY, "c", "n", LONG_ID, "https://evil.example.org/", None, None)
    with pytest.raises(access.Refused, match="no Referer"):
        access.authorize(referer, KEY, "c", "n", LONG_ID, None, None, None)
    shorter = config.Web(lms_origins=WEB.lms_origins, auth="referer", min_student_id=4)
    access.authorize(shorter, KEY, "c", "n", "1234", LMS_PAGE, None, None)


def test_referer_mode_accepts_signed_urls_and_judges_them_by_their_signature():
    referer = config.Web(lms_origins=WEB.lms_origins, auth="referer")
    access.authorize(referer, KEY, "c", "n", "s", None, *signed_args())  # short id, no referer: signed wins
    expires, signature = signed_args()
    with pytest.raises(access.Refused, match="bad signature"):
        access.authorize(referer, KEY, "c", "n", LONG_ID, LMS_PAGE, expires, signature)
    with pytest.raises(access.Refused, match="not signed"):
        access.authorize(referer, KEY, "c", "n", LONG_ID, LMS_PAGE, "", None)

"""The configuration: the example documents every key, bad values name their key."""

import dataclasses
import re
from pathlib import Path

import pytest

from nbhosting import config

EXAMPLE = Path(__file__).parent.parent / "packaging" / "nbhosting.toml.example"


def uncommented(text: str) -> str:
    """The example with its `# key = value` lines made active."""
    return "\n".join(re.sub(r"^# ([a-z_]+ = \S+)(\s+#.*)?$", r"\1", line) for line in text.splitlines())


def test_example_documents_every_key_with_its_default(tmp_path):
    path = tmp_path / "nbhosting.toml"
    path.write_text(uncommented(EXAMPLE.read_text()))
    assert config.load(path) == config.Config()
    text = EXAMPLE.read_text()
    for section in dataclasses.fields(config.Config):
        assert f"[{section.name}]" in text
        for field in dataclasses.fields(section.type if isinstance(section.type, type) else type(section.default)):
            assert re.search(rf"^# {field.name} = ", text, re.M), f"{section.name}.{field.name} undocumented"


def test_no_file_is_the_defaults(tmp_path):
    assert config.load(tmp_path / "none.toml") == config.Config()


@pytest.mark.parametrize("text, message", [
    ("[web]\nlms_origin = []", "web.lms_origin: unknown key"),
    ("[webs]\n", "webs: unknown section"),
    ("[web]\nrequire_referer = true", "web.require_referer: unknown key"),
    ("[web]\nrequire_signature = true", "web.require_signature: unknown key"),
    ("[web]\nauth = 'lti'", "web.auth: 'lti': LTI launches are not a mode: they work beside either mode, from the platforms registered with `nbh lti add`; use one of 'signed', 'referer'"),
    ("[web]\nauth = 'none'", "web.auth: 'none' is not one of 'signed', 'referer'"),
    ("[web]\nauth = true", "web.auth: expected a string, got true or false"),
    ("[web]\nauth = 'referer'", "web.auth: 'referer' needs web.lms_origins"),
    ("[web]\nmin_student_id = 0", "web.min_student_id: must be between 1 and 40"),
    ("[web]\nmin_student_id = 41", "web.min_student_id: must be between 1 and 40"),
    ("[web]\nlms_origins = ['lms.example.org']", "web.lms_origins: 'lms.example.org' is not an origin"),
    ("[web]\nstart_page_after = 99", "web.start_page_after: must be between 0 and 30"),
    ("[web]\nprestart_timeout = -1", "web.prestart_timeout: must be between 0 (off) and 3600 seconds"),
    ("[web]\nprestart_timeout = 1.5", "web.prestart_timeout: expected an integer, got a number"),
    ("[web]\nstaff_url = 'https://admin.example.org'", "web.staff_url: 'https://admin.example.org' is not like"),
    ("[web]\nstaff_url = 'https://staff.example.org/staff'", "is not like https://staff.example.org"),
    ("[web]\npublic_url = 'https://staff.example.org'\nstaff_url = 'https://staff.example.org:8443'",
     "web.staff_url: the staff pages need an origin of their own"),
    ("[web]\nstudent_origin = 'https://nb.example.org'", "web.student_origin: 'https://nb.example.org' is not like"),
    ("[web]\nstudent_origin = 'https://x{key}.nb.example.org'", "is not like https://{key}.nb.example.org"),
    ("[web]\nstudent_origin = 'https://{key}'", "is not like https://{key}.nb.example.org"),
    ("[web]\nstudent_origin = 'https://{key}.nb.example.org/nb'", "is not like https://{key}.nb.example.org"),
    ("[limits]\nimages = ['-rm']", "limits.images: '-rm' is not an image reference"),
    ("[limits]\nmemory_max = 'lots'", "limits.memory_max: 'lots' is not a size"),
    ("[limits]\ndisk_max = '16M'", "limits.disk_max: '16M' is not a size like 1G, of 32M at least (0: no bound)"),
    ("[limits]\ndisk_max = 'infinity'", "limits.disk_max: 'infinity' is not a size"),
    ("[limits]\ndisk_max = 1", "limits.disk_max: expected a string, got an integer"),
    ("[limits]\ntasks_max = 1.5", "limits.tasks_max: expected an integer, got a number"),
    ("[limits]\nmax_running = 0", "limits.max_running: must be at least 1"),
    ("[limits]\nnew_workspaces_per_minute = -1", "limits.new_workspaces_per_minute: must be at least 1"),
    ("[events]\nkeep_days = -1", "events.keep_days: must be 0 (keep everything) or a positive number of days"),
    ("[events]\nsample_period = 5", "events.sample_period: must be at least 10 seconds"),
    ("[events]\nkeep = 3", "events.keep: unknown key"),
    ("[cull]\ndormant_after = 0", "cull.dormant_after: must be a positive number of seconds"),
    ("[cull]\ndormant_after = '7d'", "cull.dormant_after: expected an integer, got a string"),
    ("web = 1", "web: expected a table"),
    ("[web", "nbhosting.toml: Expected ']'"),
])
def test_bad_configuration_names_the_key(tmp_path, text, message):
    path = tmp_path / "nbhosting.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as error:
        config.load(path)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_frame_ancestors():
    web = config.Web(lms_origins=("https://lms.fun-mooc.fr", "https://moodle.example.org"))
    assert web.frame_ancestors == "'self' https://lms.fun-mooc.fr https://moodle.example.org"


def test_referer_mode(tmp_path):
    path = tmp_path / "nbhosting.toml"
    path.write_text("[web]\nauth = 'referer'\nlms_origins = ['https://lms.fun-mooc.fr']\nmin_student_id = 32\n")
    web = config.load(path).web
    assert (web.auth, web.min_student_id) == ("referer", 32)


def test_a_pairs_origin_is_the_template_with_its_key():
    web = config.Web(student_origin="https://{key}.nb.example.org:8443")
    web.check()
    assert web.student_url("a" * 26) == f"https://{'a' * 26}.nb.example.org:8443"
    assert config.Web().student_origin == ""  # single-origin mode by default


def test_the_staff_pages_origin_defaults_to_staff_dot_the_site():
    assert config.Web().staff_origin == "https://staff.localhost"
    assert config.Web(public_url="https://nb.example.org").staff_origin == "https://staff.nb.example.org"
    assert config.Web(staff_url="https://staff.example.com").staff_origin == "https://staff.example.com"


@pytest.mark.parametrize(("value", "text"), [(2 << 30, "2G"), (1536 << 20, "1536M"), (1 << 40, "1T"), (100, "100"),
                                             (1025, "1025")])
def test_a_size_is_written_as_systemd_and_the_settings_read_it(value, text):
    assert config.size_text(value) == text
    assert config.size_bytes(text) == value


@pytest.mark.parametrize(("seconds", "text"), [(None, "-"), (0, "0m00s"), (247.9, "4m07s"), (3600, "1h00m"),
                                               (3900, "1h05m"), (90061, "25h01m")])
def test_a_duration_as_nbh_status_and_the_staff_pages_show_it(seconds, text):
    assert config.duration_text(seconds) == text

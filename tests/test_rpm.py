"""The RPM as an operator gets it: built from HEAD and linted (`make rpm`),
installed into a scratch root with its scriptlets, and booted in the sandbox.

What is checked is read from the repository at HEAD, which the RPM is built
from: its units/, nginx/, polkit/ and the tmpfiles.d and sysusers.d files, so
a unit or an account added there is checked without touching this file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from devtools import releases, rpminstall
from devtools import sandbox as sandbox_module

from .conftest import COURSE, Sandbox, in_sandbox_allowed

pytestmark = pytest.mark.rpm

REPO = rpminstall.REPO
UNIT_DIR = "/usr/lib/systemd/system"
# Directives whose path is a socket that systemd makes: its folder must exist.
SOCKET_KEYS = {"ListenStream", "ListenDatagram", "ListenSequentialPacket", "ListenFIFO"}
ACCOUNT_KEYS = {"User", "Group", "SupplementaryGroups", "SocketUser", "SocketGroup"}
PATH_IN_VALUE = re.compile(r"(?:^|[\s:=+!@])(/[^\s;:\"']*)")


def head(path: str) -> str:
    """A file as the RPM was built from it."""
    return subprocess.run(["git", "-C", str(REPO), "show", f"HEAD:{path}"], capture_output=True, text=True,
                          check=True).stdout


def head_files(folder: str) -> list[str]:
    listing = subprocess.run(["git", "-C", str(REPO), "ls-tree", "-r", "--name-only", "HEAD", folder],
                             capture_output=True, text=True, check=True).stdout
    return listing.split()


def unit_texts() -> dict[str, str]:
    return {Path(name).name: head(name) for name in head_files("units/")}


def directives(text: str):
    """(key, value) of a unit file or an EnvironmentFile, comments aside."""
    for line in text.splitlines():
        line = line.strip()
        if line and line[0] not in "#;[" and "=" in line:
            yield tuple(line.split("=", 1))


def tmpfiles_lines() -> list[list[str]]:
    """type, path, mode, user, group of each line of the tmpfiles.d file."""
    return [line.split()[:5] for line in head("packaging/rpm/nbhosting.tmpfiles").splitlines()
            if line.strip() and not line.startswith("#")]


def sysusers_accounts() -> set[str]:
    return {line.split()[1] for line in head("packaging/rpm/nbhosting.sysusers").splitlines()
            if line[:1] in ("u", "g")}


def folder_of(path: str) -> str:
    """What must exist for a path: itself, or for one with specifiers or
    variables (%I, $nbh_course), the folder before them."""
    cut = min((path.index(c) for c in "%$" if c in path), default=len(path))
    return path[:cut].rsplit("/", 1)[0] if cut < len(path) else path


def socket_folder(path: str) -> str:
    """What must exist for a socket that systemd or a server makes: its folder."""
    return folder_of(path) if folder_of(path) != path else path.rsplit("/", 1)[0]


# -- make rpm ---------------------------------------------------------------

@pytest.fixture(scope="module")
def made():
    """`make rpm`, as an operator or CI runs it."""
    result = subprocess.run(["make", "--no-print-directory", "rpm"], cwd=REPO, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return result


@pytest.fixture(scope="module")
def rpm(made) -> Path:
    return rpminstall.built_rpm()


def test_make_rpm_builds_from_head_and_lints_clean(made, rpm):
    assert re.search(r"\b0 errors, 0 warnings\b", made.stdout), made.stdout[-2000:]
    version = re.search(r"^Version:\s*(\S+)", head("packaging/rpm/nbhosting.spec"), re.M).group(1)
    top = REPO / "build" / "rpm"
    assert rpm.name == f"nbhosting-{version}-1.noarch.rpm"
    assert [p.name for p in (top / "SRPMS").iterdir()] == [f"nbhosting-{version}-1.src.rpm"]
    # the tarball is HEAD's tree: nothing untracked, nothing uncommitted
    with tarfile.open(top / "SOURCES" / f"nbhosting-{version}.tar.gz") as tarball:
        files = {m.name.split("/", 1)[1] for m in tarball.getmembers() if not m.isdir()}
    assert files == set(head_files("."))


def test_the_package_has_every_unit_and_the_site_rule_and_system_files(rpm):
    files = set(query(rpm, "-qlp"))
    packaged_units = {Path(f).name for f in files if f.startswith(UNIT_DIR + "/")}
    assert packaged_units == set(unit_texts())
    assert {"/usr/share/polkit-1/rules.d/50-nbhosting.rules", "/etc/nginx/conf.d/nbhosting.conf",
            "/usr/lib/sysusers.d/nbhosting.conf", "/usr/lib/tmpfiles.d/nbhosting.conf"} <= files
    config = query(rpm, "-qpc")
    assert config == ["/etc/nginx/conf.d/nbhosting.conf"]  # the operator's edits survive an upgrade
    # the product alone: nothing of devtools/ (the sandbox, the demo, rpminstall, the release trees)
    assert [f for f in files if any(word in Path(f).name for word in ("sandbox", "demo", "rpminstall", "releases"))
            or "devtools" in f] == []


def test_the_package_has_the_stats_pages_libraries_that_nginx_serves(rpm):
    """Built without a registry: the bundles `make static` took from npm, in
    their own source archive, where the site's /_static/ location finds them."""
    files = set(query(rpm, "-qlp"))
    bundles = {"vega.min.js", "vega-lite.min.js", "vega-embed.min.js"}
    assert {f"/usr/share/nbhosting/_static/{name}" for name in bundles} <= files
    from nbhosting.web import stats as stats_pages  # noqa: PLC0415
    assert set(stats_pages.BUNDLES) == bundles
    site = head("nginx/nbhosting.conf")
    location = site.split("location /_static/ {", 1)[1].split("}", 1)[0]
    assert "root /usr/share/nbhosting;" in location and "max-age=31536000" in location
    lock = json.loads(head("static/package-lock.json"))
    assert {name: lock["packages"][f"node_modules/{name}"]["version"] for name in ("vega", "vega-lite", "vega-embed")} \
        == {name: version for name, version in re.findall(r"bundled\(js-([a-z-]+)\) = (\S+)",
                                                         head("packaging/rpm/nbhosting.spec"))}


def query(rpm: Path, *options: str) -> list[str]:
    return subprocess.run(["rpm", *options, str(rpm)], capture_output=True, text=True, check=True).stdout.split()


def scripts(rpm: Path) -> dict[str, str]:
    """The scriptlets' texts, by section: preinstall, postinstall, ..."""
    text = subprocess.run(["rpm", "-qp", "--scripts", str(rpm)], capture_output=True, text=True,
                          check=True).stdout
    parts = re.split(r"^(\w+) scriptlet \(using /bin/sh\):$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_units_are_preset_at_install_and_an_upgrade_restarts_no_students_server(rpm):
    sections = scripts(rpm)
    installable = [name for name, text in unit_texts().items() if "[Install]" in text]
    assert installable
    assert [n for n in installable if n not in sections["postinstall"] or n not in sections["preuninstall"]] == []
    restarting = " ".join(line for line in sections["postuninstall"].splitlines()
                          if "restart" in line and not line.lstrip().startswith("#"))
    assert "nbh-web.service" in restarting
    students = [n for n in unit_texts() if "@" in n] + ["nbh-podman.service"]  # they Require= it
    assert not [n for n in students if n in restarting], restarting


# -- installed into a scratch root -------------------------------------------

class Root:
    """A scratch root after `rpm -i`: the host's / below, what the install made above."""

    def __init__(self, directory: Path, output: str):
        self.upper, self.output = directory / "upper", output
        db = self.upper / "var/lib/rpm"
        self.files = set(subprocess.run(["rpm", "--dbpath", str(db), "-ql", "nbhosting"], capture_output=True,
                                        text=True, check=True).stdout.split())
        self.users = self.names("etc/passwd")
        self.groups = self.names("etc/group")

    def names(self, table: str) -> dict[int, str]:
        lines = (self.upper / table).read_text().splitlines()
        return {int(fields[2]): fields[0] for fields in (line.split(":") for line in lines)}

    def made(self, path: str) -> Path | None:
        """The file if the install made it (package or scriptlets)."""
        file = self.upper / path.lstrip("/")
        return file if file.exists() or file.is_symlink() else None

    def provenance(self, path: str) -> str | None:
        """Who makes this path: the package, tmpfiles.d, the scriptlets (not
        under /run: gone at the next boot), or the host (the Requires)."""
        if path in self.files:
            return "package"
        if path in {line[1] for line in tmpfiles_lines()} and self.made(path):
            return "tmpfiles"
        if not path.startswith("/run/") and self.made(path):
            return "scriptlets"
        if "nbh" not in path and Path(path).exists():
            return "host"
        return None


@pytest.fixture(scope="module")
def root(rpm, tmp_path_factory) -> Root:
    directory = tmp_path_factory.mktemp("rpm-root")
    result = subprocess.run([str(REPO / ".venv/bin/python"), "-m", "devtools.rpminstall", "scratch",
                             str(directory / "scratch"), str(rpm)], capture_output=True, text=True, timeout=300,
                            cwd=REPO)
    assert result.returncode == 0, (result.stdout, result.stderr)
    return Root(directory / "scratch", result.stdout + result.stderr)


def test_the_scriptlets_run_cleanly_in_a_scratch_root(root):
    expected = re.compile(r"created /etc/nbhosting/\S+|Creating (group|user) '[\w-]+' .*"
                          # systemctl 257 quotes the paths
                          r"|Created symlink (/etc/systemd/system/\S+ → \S+|'/etc/systemd/system/[^']+' → '[^']+')\.")
    assert [line for line in root.output.splitlines() if not expected.fullmatch(line)] == []
    for account in sysusers_accounts():
        assert account in root.users.values() and account in root.groups.values()
    members = {line.split(":")[0]: line.split(":")[3].split(",")
               for line in (root.upper / "etc/group").read_text().splitlines()}
    assert "nbh" in members["nbh-jupyter"]
    # nbh setup: the host secret and the LMS key, for root and nbh-web only
    for secret in ("/etc/nbhosting/secret", "/etc/nbhosting/lms-key"):
        info = root.made(secret).stat()
        assert (stat.S_IMODE(info.st_mode), root.users[info.st_uid], root.groups[info.st_gid]) == \
            (0o440, "root", "nbh"), secret
        assert info.st_size >= 32
    assert root.made("/etc/systemd/system/nbh-jupyter@.service.d/40-limits.conf")
    # tmpfiles.d: every line made as it says
    for kind, path, mode, user, group in tmpfiles_lines():
        assert kind == "d", (kind, path)
        folder = root.made(path)
        assert folder and folder.is_dir(), path
        info = folder.stat()
        assert (oct(stat.S_IMODE(info.st_mode)), root.users.get(info.st_uid), root.groups.get(info.st_gid)) == \
            (oct(int(mode, 8)), user, group), path


def test_every_path_a_unit_names_is_installed(root):
    named = []
    for name, text in unit_texts().items():
        for key, value in directives(text):
            # a word that begins with "-" is optional by its own syntax (but
            # an Exec line's "-" is about its exit status)
            words = value.split() if not key.startswith("Exec") else [value.lstrip("-")]
            value = " ".join(word for word in words if not word.startswith("-"))
            for path in PATH_IN_VALUE.findall(value.replace("file://", "")):
                named.append((name, key, socket_folder(path) if key in SOCKET_KEYS else folder_of(path)))
                if key == "EnvironmentFile":
                    named += [(path, k, folder_of(v)) for k, v in directives(root.made(path).read_text())
                              if v.startswith("/")]
    assert named
    unmade = [(unit, key, path) for unit, key, path in named if root.provenance(path) is None]
    assert unmade == []
    # what systemd needs again at every boot is tmpfiles.d's, not the scriptlets'
    assert not [p for _, _, p in named if p.startswith("/run/") and root.provenance(p) != "tmpfiles"]


def test_every_account_the_units_and_tmpfiles_name_exists(root):
    named = {(name, account) for name, text in unit_texts().items()
             for key, value in directives(text) if key in ACCOUNT_KEYS for account in value.split()}
    named |= {("tmpfiles.d", account) for line in tmpfiles_lines() for account in line[3:5]}
    assert named
    known = set(root.users.values()) | set(root.groups.values())
    assert [(where, account) for where, account in sorted(named) if account not in known] == []
    ours = {account for _, account in named if account.startswith("nbh")}
    assert ours <= sysusers_accounts()


def test_the_polkit_rule_names_packaged_units_and_a_packaged_account(root):
    rule = head("polkit/nbhosting.rules")
    user = re.search(r'subject\.user != "([\w-]+)"', rule).group(1)
    assert user in sysusers_accounts()
    prefix = re.search(r'"\^(nbh-)\(\?:', rule).group(1)
    templates = re.findall(r'(\w+)@" \+ instance \+ "\\\\\.(?:\(\?:)?([\w|]+)', rule)
    assert templates
    for template, suffixes in templates:
        for suffix in suffixes.split("|"):
            assert f"{UNIT_DIR}/{prefix}{template}@.{suffix}" in root.files, (template, suffix)


def test_the_nginx_site_names_installed_paths(root):
    site = head("nginx/nbhosting.conf")
    includes = re.findall(r"^\s*include (\S+);", site, re.MULTILINE)
    # what `nbh setup` writes (HTTP/2, by nginx's version), in each TLS server:
    # a mask, which nginx takes matching nothing
    written = "/etc/nbhosting/nginx/*.conf"
    assert includes.count(written) == 3
    includes = [include for include in includes if include != written]
    assert includes == ["/usr/share/nbhosting/nginx/jupyter-static.conf",
                        "/usr/share/nbhosting/nginx/student-server.conf"] * 2
    assert set(includes) <= root.files
    # with what the site includes, as nginx reads it
    text = site + head("nginx/student-server.conf") + head("nginx/jupyter-static.conf")
    # the images' Notebook files: a folder that tmpfiles makes
    (static,) = re.findall(r"alias (/\S+?)/\$nbh_image_id/", text)
    assert root.provenance(static) == "tmpfiles", static
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    roots = [line.split()[1].rstrip(";") for line in lines if line.startswith("root ")]
    for page in {line.split()[-1].rstrip(";") for line in lines if line.startswith("error_page ")}:
        assert any(f"{folder}{page}" in root.files for folder in roots), page
    # proxy_pass's, and the map's that proxy_pass http://$nbh_server takes
    sockets = re.findall(r"unix:([^:]+):;", text)
    assert len(sockets) > 2 and "proxy_pass http://$nbh_server;" in text
    for socket in sockets:
        assert root.provenance(socket_folder(socket)) == "tmpfiles", socket
    switches = re.findall(r"if \(-f ([^)\s]+)\)", text)
    assert "$nbh_closed_if" in switches
    switches += re.findall(r"^\s+\"\"\s+(/\S+);", site.split("map $nbh_key $nbh_closed_if", 1)[1], re.MULTILINE)[:1]
    for switch in (switch for switch in switches if not switch.startswith("$")):
        assert root.provenance(switch.rsplit("/", 1)[0]) in ("tmpfiles", "package"), switch
    assert "/etc/nbhosting/student-origins" in switches
    for log in re.findall(r"access_log (\S+)", site):
        assert root.provenance(log.rsplit("/", 1)[0]) == "host", log
    # what the operator provides: named in the manual's install page, under TLS
    install_section = head("docs/install.md").split("\n## TLS\n", 1)[1].split("\n## ", 1)[0]
    for provided in re.findall(r"ssl_certificate(?:_key)?\s+(\S+);", site):
        assert provided in install_section, provided


# -- booted in the sandbox ----------------------------------------------------

def test_up_from_a_missing_rpm_says_so_in_one_line(capsys):
    assert sandbox_module.main(["up", "--from-rpm", "/nonexistent/nbhosting.rpm"]) == 1
    assert capsys.readouterr().err == ("nbh-sandbox: no RPM at /nonexistent/nbhosting.rpm "
                                       "(make rpm builds one)\n")


@pytest.fixture(scope="module")
def rpm_sandbox(rpm):
    """The sandbox booted from the RPM; the checkout's again after, if it was up."""
    reason = in_sandbox_allowed()
    if reason:
        pytest.fail(f"cannot boot the sandbox: {reason}")
    was_up = sandbox_module.pid() is not None
    sandbox_module.down()
    sandbox_module.up(from_rpm=rpm)
    yield Sandbox()
    sandbox_module.down()
    if was_up:
        sandbox_module.up()


@pytest.mark.sandbox
def test_the_sandbox_booted_from_the_rpm_serves_a_notebook(rpm_sandbox):
    from .web_helpers import NOTEBOOK, entry, get

    sandbox = rpm_sandbox
    # what runs is the package's, not the checkout's
    # the host's rpm (a tree of the other release has none), on a copy of the sandbox's database
    with tempfile.TemporaryDirectory() as copy:
        shutil.copytree(sandbox.path(rpminstall.DBPATH), f"{copy}/rpm")
        owned = subprocess.run(["rpm", "--dbpath", f"{copy}/rpm", "-ql", "nbhosting"], capture_output=True,
                               text=True, check=True).stdout.split()
    for command in ("nbh", "nbh-web", "nbh-jupyter-run"):
        assert f"/usr/bin/{command}" in owned, command
        assert not sandbox.path(f"/usr/bin/{command}").is_symlink()
    where = sandbox.run("python3", "-c", "import nbhosting; print(nbhosting.__file__)").stdout.strip()
    assert where.startswith("/usr/lib/python3/dist-packages/"), where
    assert not sandbox.path("/etc/systemd/system/nbh-web.service.d").exists()  # no checkout drop-in
    assert sandbox_module.status()["installed"].startswith(str(rpminstall.built_rpm()))  # "... on trixie" in a tree
    with pytest.raises(sandbox_module.SandboxError, match="installed from .*: `down` it first"):
        sandbox_module.up()  # not silently the RPM's when the checkout's is asked for
    sandbox.make_course(COURSE)
    student = "fromrpm-s0000000000001"
    url = entry(COURSE, NOTEBOOK, student)
    assert url.startswith(f"/nb/{COURSE}/{student}/notebooks/{NOTEBOOK}.ipynb?token=")
    page = get(url, referer=None)
    assert page.status == 200 and b"<title>Jupyter Notebook" in page.body, page.body[:300]
    state = sandbox.run("systemctl", "is-system-running", check=False).stdout.strip()
    assert state == "running", sandbox.run("systemctl", "--failed", "--no-legend").stdout


@pytest.mark.sandbox
def test_the_other_release_booted_from_the_rpm_runs_a_students_notebook(rpm):
    """The same RPM (its Python under /usr/lib/python3/dist-packages, which
    every Debian release's python3 reads) installed into the other Debian
    release's tree by rpm, its scriptlets run there, then booted: what runs is
    the package's, on the release's python3, and a student's cell runs."""
    from .release_helpers import student_visit

    booted = releases.up(from_rpm=rpm)
    try:
        for command in ("nbh", "nbh-web", "nbh-jupyter-run"):
            owner = subprocess.run(["rpm", "--root", str(booted.tree), "--dbpath", rpminstall.DBPATH, "-qf",
                                    f"/usr/bin/{command}"], capture_output=True, text=True).stdout
            assert owner.startswith("nbhosting-"), (command, owner)
        where = booted.run("python3", "-c", "import nbhosting; print(nbhosting.__file__)")
        assert where.stdout.startswith("/usr/lib/python3/dist-packages/nbhosting/"), where.stdout
        # the scriptlets' work: accounts (%pre), presets (%post), nbh setup's secrets
        assert booted.run("systemctl", "is-enabled", "nbh-web.socket").stdout.strip() == "enabled"
        assert booted.run("stat", "-c", "%U:%G", "/etc/nbhosting/secret").stdout.strip() == "root:nbh"
        releases.open_site(booted)
        student_visit(booted, f"fromrpm-{os.getpid()}")
        state = booted.run("systemctl", "is-system-running", check=False).stdout.strip()
        assert state == "running", booted.run("systemctl", "--failed", "--no-legend").stdout
    finally:
        releases.down(booted)


def test_the_packages_check_passes_in_the_other_release(rpm):
    """The spec's %check (the fast tests, of the installed package) with the
    other release's python3 and Debian's libraries, not the checkout's
    virtualenv: Python 3.13 and Debian 13's on a Debian 12 host; Debian 12's
    (Python 3.11, pytest 7) under `make test OS=trixie`."""
    tree = releases.prepare(releases.other_release(), from_rpm=rpm, name="check")
    try:
        done = releases.check(tree)
    finally:
        releases.remove(tree)
    output = done.stdout + done.stderr
    summary = "\n".join(line for line in output.splitlines() if line.startswith(("FAILED", "ERROR")))
    assert done.returncode == 0, summary + output[-3000:]
    assert output.startswith("nbhosting from /usr/lib/python3/dist-packages/nbhosting/"), output[:300]
    passed = re.search(r"\b(\d+) passed\b", output)
    assert passed and int(passed[1]) > 500, output[-2000:]  # the fast tests, not a few of them


# Fedora's names of the Python distributions pyproject.toml depends on,
# where they are not python3-<name>.
FEDORA_NAMES = {"systemd-python": "python3-systemd", "pyjwt": "python3-jwt"}


def test_the_spec_requires_every_dependency_of_the_package():
    """A dependency pyproject.toml gained is one the RPM's host must have too
    (argon2-cffi, the staff passwords' hash, was missing from the spec)."""
    import tomllib  # noqa: PLC0415

    with open(REPO / "pyproject.toml", "rb") as opened:
        dependencies = tomllib.load(opened)["project"]["dependencies"]
    spec = (REPO / "packaging/rpm/nbhosting.spec").read_text()
    required = {name.replace("_", "-") for name in re.findall(r"^Requires:\s+(\S+)", spec, re.M)}
    for dependency in dependencies:
        name = re.match(r"[A-Za-z0-9._-]+", dependency)[0].lower().replace("_", "-")
        wanted = FEDORA_NAMES.get(name, f"python3-{name}")
        assert wanted in required, (dependency, wanted)

"""What an image's static files become on the host (nbhosting/jupyter_static.py),
without a sandbox: the names kept, the tar members refused, the bounds, and
the fingerprint the host and the image's nbh_static compute alike."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import tarfile
from pathlib import Path

import pytest

from nbhosting import jupyter_static

NOTEBOOK = "opt/jupyter/lib/python3.11/site-packages/notebook/static"
LABEXT = "opt/jupyter/share/jupyter/labextensions"


def image_module():
    """images/jupyter/nbh_static.py, as the image has it."""
    path = Path(__file__).resolve().parents[1] / "images/jupyter/nbh_static.py"
    spec = importlib.util.spec_from_file_location("nbh_static", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def archive(*members: tuple[str, str, bytes | str]) -> io.BytesIO:
    """A tar stream as `podman export` writes one: (kind, name, data or link target)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE, "device": tarfile.CHRTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = data
            tar.addfile(info)
    out.seek(0)
    return out


@pytest.mark.parametrize("member, kept", [
    (f"{NOTEBOOK}/main.abc.js", "static/main.abc.js"),
    (f"./{NOTEBOOK}/3681.d5497229ce06e4a8.js", "static/3681.d5497229ce06e4a8.js"),
    ("usr/lib/python3/dist-packages/notebook/static/x.css", "static/x.css"),
    (f"{LABEXT}/@nbhosting/menus/static/remoteEntry.1.js", "labextensions/@nbhosting/menus/static/remoteEntry.1.js"),
    ("usr/local/share/jupyter/labextensions/e/package.json", "labextensions/e/package.json"),
    (f"{NOTEBOOK}/fonts/d5b0a3566b352ee9.woff2", "static/fonts/d5b0a3566b352ee9.woff2"),
    # what is no page's script, or would be a page of the site's origin
    (f"{NOTEBOOK}/index.html", None), (f"{NOTEBOOK}/x.xhtml", None), (f"{NOTEBOOK}/x.js.map", None),
    (f"{NOTEBOOK}/README", None), (f"{LABEXT}/e/static/x.py", None),
    # names that are not plain
    (f"{NOTEBOOK}/../../../../etc/x.js", None), (f"{NOTEBOOK}/.hidden.js", None), (f"{NOTEBOOK}//x.js", None),
    (f"{NOTEBOOK}/a b.js", None), (f"{NOTEBOOK}/x\n.js", None),
    # elsewhere in the image
    ("etc/nbhosting/secret.js", None), ("opt/jupyter/lib/python3.11/site-packages/jupyterlab/static/x.js", None),
    ("home/jovyan/notebook/static/x.js", None),
])
def test_the_names_kept(member, kept):
    assert jupyter_static.target(member) == kept


def test_files_are_copied_and_hard_links_to_them_too(tmp_path):
    count = jupyter_static.unpack(archive(
        ("dir", f"{NOTEBOOK}", b""),
        ("file", f"{NOTEBOOK}/main.1.js", b"main"),
        ("hardlink", f"{NOTEBOOK}/copy.js", f"{NOTEBOOK}/main.1.js"),
        ("file", f"{NOTEBOOK}/index.html", b"<script>"),
        ("symlink", "etc/elsewhere", "/etc/passwd"),  # not a kept name: ignored
        ("file", "etc/nbhosting/secret", b"s3cret"),
    ), tmp_path)
    assert count == 2
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == [
        "static/copy.js", "static/main.1.js"]
    assert (tmp_path / "static/copy.js").read_bytes() == b"main"
    assert not (tmp_path / "static/copy.js").is_symlink() and (tmp_path / "static/copy.js").stat().st_nlink == 1
    assert (tmp_path / "static/main.1.js").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("member, words", [
    (("symlink", f"{NOTEBOOK}/main.1.js", "/etc/nbhosting/secret"), "not a regular file"),
    (("symlink", f"{LABEXT}/e/static/remoteEntry.1.js", "../../../../../etc/shadow"), "not a regular file"),
    (("hardlink", f"{NOTEBOOK}/main.1.js", "etc/nbhosting/secret"), "hard link to a file not extracted"),
    (("fifo", f"{NOTEBOOK}/main.1.js", ""), "not a regular file"),
    (("device", f"{NOTEBOOK}/main.1.js", ""), "not a regular file"),
])
def test_a_kept_name_that_is_no_file_fails_the_whole(tmp_path, member, words):
    """The page would miss that file: the servers keep serving their own."""
    with pytest.raises(jupyter_static.StaticError, match=words):
        jupyter_static.unpack(archive(("file", "etc/nbhosting/secret", b"s3cret"), member), tmp_path)
    assert b"s3cret" not in b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_the_first_copy_of_a_name_stays(tmp_path):
    jupyter_static.unpack(archive(("file", f"{LABEXT}/e/static/a.js", b"first"),
                                  ("file", "usr/share/jupyter/labextensions/e/static/a.js", b"second")), tmp_path)
    assert (tmp_path / "labextensions/e/static/a.js").read_bytes() == b"first"


def test_the_bounds(tmp_path, monkeypatch):
    monkeypatch.setattr(jupyter_static, "MAX_FILES", 3)
    with pytest.raises(jupyter_static.StaticError, match="more than 3 files"):
        jupyter_static.unpack(archive(*[("file", f"{NOTEBOOK}/{n}.js", b"x") for n in range(4)]), tmp_path / "a")
    monkeypatch.setattr(jupyter_static, "MAX_BYTES", 1000)
    with pytest.raises(jupyter_static.StaticError, match="MiB"):
        jupyter_static.unpack(archive(("file", f"{NOTEBOOK}/big.js", b"x" * 1001)), tmp_path / "b")


def test_precompressed_where_it_saves(tmp_path):
    import gzip  # noqa: PLC0415

    import brotli  # noqa: PLC0415

    (tmp_path / "static").mkdir()
    (tmp_path / "static/big.js").write_text("".join(f"let x{n} = {n * n};\n" for n in range(300)))
    (tmp_path / "static/small.js").write_text("x")
    (tmp_path / "static/font.woff2").write_bytes(b"w" * 2000)  # compressed already: left alone
    jupyter_static.precompress(tmp_path)
    big = (tmp_path / "static/big.js").read_bytes()
    assert gzip.decompress((tmp_path / "static/big.js.gz").read_bytes()) == big
    assert brotli.decompress((tmp_path / "static/big.js.br").read_bytes()) == big
    assert (tmp_path / "static/big.js.br").stat().st_size < (tmp_path / "static/big.js.gz").stat().st_size
    for name in ("small.js.gz", "small.js.br", "font.woff2.gz", "font.woff2.br"):
        assert not (tmp_path / "static" / name).exists(), name


def test_an_earlier_images_same_file_is_linked_not_compressed_again(tmp_path):
    """A course's image built FROM the site's: Notebook's files are the same
    bytes; they and their compressed forms become links to the site's. A file
    of the same name with other bytes is the new image's own."""
    earlier, new = tmp_path / ("a" * 64), tmp_path / ("b" * 64)
    text = "".join(f"let x{n} = {n * n};\n" for n in range(300))
    for folder in (earlier, new):
        (folder / "static").mkdir(parents=True)
        (folder / "static/same.js").write_text(text)
        (folder / "static/other.js").write_text(text + ("// the site's\n" if folder == earlier else "// mine\n"))
    jupyter_static.precompress(earlier)
    jupyter_static.precompress(new, [earlier])
    for name in ("same.js", "same.js.gz", "same.js.br"):
        assert (new / "static" / name).stat().st_ino == (earlier / "static" / name).stat().st_ino, name
    for name in ("other.js", "other.js.gz", "other.js.br"):
        assert (new / "static" / name).stat().st_ino != (earlier / "static" / name).stat().st_ino, name
    assert (new / "static/other.js").read_text().endswith("// mine\n")
    assert [p.name for p in new.rglob(".*")] == []  # no temporary name left
    # the earlier folder removed (nbh gc), the new one keeps its files whole
    import shutil  # noqa: PLC0415
    shutil.rmtree(earlier)
    assert (new / "static/same.js").read_text() == text and (new / "static/same.js.br").stat().st_size > 0


def test_the_host_and_the_image_compute_the_same_fingerprint(tmp_path, monkeypatch):
    (tmp_path / "static").mkdir()
    (tmp_path / "static/main.a7084e35.js").write_text("")
    (tmp_path / "static/3681.d549.js").write_text("")
    ext = tmp_path / "labextensions/@nbhosting/menus"
    (ext / "static").mkdir(parents=True)
    (ext / "static/remoteEntry.5cbb.js").write_text("")
    (ext / "package.json").write_text(json.dumps({"name": "@nbhosting/menus", "jupyterlab": {
        "_build": {"load": "static/remoteEntry.5cbb.js"}}}))
    # an extension whose entry is not there does not count (the page would miss it)
    (tmp_path / "labextensions/gone").mkdir()
    (tmp_path / "labextensions/gone/package.json").write_text(json.dumps({"name": "gone", "jupyterlab": {
        "_build": {"load": "static/remoteEntry.0.js"}}}))
    host = jupyter_static.folder_fingerprint(tmp_path)
    image = image_module()
    assert image.fingerprint(["main.a7084e35.js"], [("@nbhosting/menus", "static/remoteEntry.5cbb.js")]) == host
    assert image.fingerprint(["main.a7084e35.js"], [("@nbhosting/menus", "static/remoteEntry.0.js")]) != host
    assert image.fingerprint(["main.other.js"], [("@nbhosting/menus", "static/remoteEntry.5cbb.js")]) != host


class Handler:
    def __init__(self, name):
        self.name = name
        self.log = logging.getLogger("test-handler")


def test_the_page_takes_the_shared_copy_only_when_its_files_are_the_same(monkeypatch, caplog):
    image = image_module()
    extensions = [{"name": "e", "load": "static/remoteEntry.1.js"}]
    monkeypatch.setattr(image, "own_fingerprint", lambda found: image.fingerprint(["main.1.js"], list(found)))
    url = "/_jupyter/" + "0" * 64 + "/"
    same = image.fingerprint(["main.1.js"], [("e", "static/remoteEntry.1.js")])

    def page(name="notebook", fingerprint=same, static_url=url):
        monkeypatch.setenv("NBH_STATIC_URL", static_url)
        monkeypatch.setenv("NBH_STATIC_FINGERPRINT", fingerprint)
        config = {"fullStaticUrl": "/nb/c/s/static/notebook", "fullLabextensionsUrl": "/nb/c/s/lab/extensions",
                  "federated_extensions": extensions}
        return image.page_config_hook(Handler(name), config)

    assert page()["fullStaticUrl"] == url + "static"
    assert page()["fullLabextensionsUrl"] == url + "labextensions"
    with caplog.at_level(logging.WARNING, logger="test-handler"):
        for other in (page(fingerprint="1" * 32), page(fingerprint="1" * 32), page(name="lab"), page(static_url="")):
            assert other["fullStaticUrl"] == "/nb/c/s/static/notebook"
            assert other["fullLabextensionsUrl"] == "/nb/c/s/lab/extensions"
    assert [r.message for r in caplog.records if "is not this image's files" in r.message] and \
        len(caplog.records) == 1  # said once, in the server's log


def test_a_start_reads_only_a_well_formed_record(tmp_path, monkeypatch):
    record = tmp_path / "images.json"
    monkeypatch.setattr(jupyter_static, "RECORD", record)
    good = {"id": "a" * 64, "fingerprint": "b" * 32}
    record.write_text(json.dumps({"img:1": good, "img:2": {"id": "../x", "fingerprint": "b" * 32},
                                  "img:3": {"id": "a" * 64, "fingerprint": "b\nc"}, "img:4": "x"}))
    assert jupyter_static.for_start("img:1") == {"NBH_STATIC_URL": f"/_jupyter/{'a' * 64}/",
                                                 "NBH_STATIC_FINGERPRINT": "b" * 32}
    for image in ("img:2", "img:3", "img:4", "img:5"):
        assert jupyter_static.for_start(image) == {}
    record.write_text("not json")
    assert jupyter_static.for_start("img:1") == {}
    record.unlink()
    assert jupyter_static.for_start("img:1") == {}


def test_brotli_is_served_where_nginx_loads_the_module(tmp_path):
    """`nbh setup` writes brotli_static only where a module loader names it
    (an nginx without it would refuse the whole site)."""
    from nbhosting import cli  # noqa: PLC0415

    enabled = tmp_path / "etc/nginx/modules-enabled"
    enabled.mkdir(parents=True)
    (enabled / "50-mod-http-geoip.conf").write_text("load_module modules/ngx_http_geoip_module.so;\n")
    (enabled / "60-off.conf").write_text("# load_module modules/ngx_http_brotli_static_module.so;\n")
    assert cli.nginx_module_loader("ngx_http_brotli_static_module", str(tmp_path)) is None
    fedora = tmp_path / "usr/share/nginx/modules"
    fedora.mkdir(parents=True)
    (fedora / "mod-brotli.conf").write_text('load_module "/usr/lib64/nginx/modules/ngx_http_brotli_static_module.so";\n')
    assert cli.nginx_module_loader("ngx_http_brotli_static_module", str(tmp_path)) == \
        "/usr/share/nginx/modules/mod-brotli.conf"
    (enabled / "50-mod-http-brotli-static.conf").write_text("load_module modules/ngx_http_brotli_static_module.so;\n")
    assert cli.nginx_module_loader("ngx_http_brotli_static_module", str(tmp_path)) == \
        "/etc/nginx/modules-enabled/50-mod-http-brotli-static.conf"

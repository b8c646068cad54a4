"""Opening a course file: no symbolic link followed at any level, regular files only."""

import os

import pytest

from nbhosting import nofollow


@pytest.fixture
def root(tmp_path):
    """A course folder a/b/nb.ipynb, and outside it a secret."""
    (tmp_path / "course" / "a" / "b").mkdir(parents=True)
    (tmp_path / "course" / "a" / "b" / "nb.ipynb").write_text("notebook")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("secret")
    return tmp_path / "course"


def read(root, relative: str) -> str:
    fd = nofollow.open_file(root, relative)
    with os.fdopen(fd) as file:
        assert os.get_blocking(file.fileno())
        return file.read()


def test_a_regular_file(root):
    assert read(root, "a/b/nb.ipynb") == "notebook"


@pytest.mark.parametrize("link, target, relative", [
    ("a/b/nb.ipynb", "../../../outside/secret", "a/b/nb.ipynb"),  # the file
    ("a/b", "../../outside", "a/b/secret"),  # a folder in the middle
    ("a", "../outside", "a/secret"),  # the first folder
    ("a/b/inner.ipynb", "nb.ipynb", "a/b/inner.ipynb"),  # even to a file of the course
    ("a/b/loop.ipynb", "loop.ipynb", "a/b/loop.ipynb"),
    ("a/b/dangling.ipynb", "nowhere", "a/b/dangling.ipynb"),
])
def test_a_link_at_any_level_is_refused(root, link, target, relative):
    path = root / link
    if path.exists():
        os.rename(path, root.parent / "moved")
    path.symlink_to(target)
    with pytest.raises(nofollow.NotAFile, match="is a symbolic link$"):
        nofollow.open_file(root, relative)


def test_the_root_itself_a_link(root, tmp_path):
    (tmp_path / "linked").symlink_to(root)
    with pytest.raises(nofollow.NotAFile, match="is a symbolic link$"):
        nofollow.open_file(tmp_path / "linked", "a/b/nb.ipynb")


def test_a_fifo_is_refused_without_blocking(root):
    os.mkfifo(root / "a" / "fifo.ipynb")
    with pytest.raises(nofollow.NotAFile, match="is not a regular file$"):
        nofollow.open_file(root, "a/fifo.ipynb")


def test_a_folder_is_refused(root):
    with pytest.raises(nofollow.NotAFile, match="is not a regular file$"):
        nofollow.open_file(root, "a/b")


def test_a_file_where_a_folder_should_be(root):
    with pytest.raises(nofollow.NotAFile, match="is not a folder$"):
        nofollow.open_file(root, "a/b/nb.ipynb/x")


def test_missing(root):
    with pytest.raises(FileNotFoundError):
        nofollow.open_file(root, "a/b/none.ipynb")
    with pytest.raises(FileNotFoundError):
        nofollow.open_file(root, "none/nb.ipynb")


@pytest.mark.parametrize("relative", ["", ".", "..", "../outside/secret", "a/../../outside/secret",
                                      "/etc/passwd", "a/./b/nb.ipynb", "a//b/nb.ipynb", "a/b/nb.ipynb/"])
def test_not_a_path_inside(root, relative):
    with pytest.raises(nofollow.NotAFile):
        nofollow.open_file(root, relative)

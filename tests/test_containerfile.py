"""The build's first wall: the known escape shapes of a course's Containerfile."""

import pytest

from nbhosting import containerfile

# The escape found on the landed code (CVE-2024-1753): the bind mount's
# source, a link to / in an earlier stage, was resolved on the host.
ESCAPE = """\
ARG NBH_BASE_IMAGE
FROM $NBH_BASE_IMAGE AS b
USER root
RUN ln -s / /r
FROM $NBH_BASE_IMAGE
RUN --mount=type=bind,from=b,source=/r,target=/h sh -c 'ls /h/run/credentials; cat /h/run/credentials/nbh-jupyter*/nbh-secret'
"""


@pytest.mark.parametrize("text, reason", [
    (ESCAPE, "line 6: a bind mount from another stage or image"),
    ("FROM x\nRUN --mount=type=cache,source=../../..,target=/h ls /h\n", "line 2: a cache mount whose source leaves"),
    ("FROM x\nRUN --mount=from=b,src=/r,target=/h ls\n", "line 2: a bind mount from another stage"),
    ("FROM x\nRUN --mount=type=cache,from=b,target=/h ls\n", "line 2: a cache mount from another stage"),
    ("FROM x\nRUN --mount=type=bind,source=a/../../..,target=/h ls\n", "line 2: a bind mount whose source leaves"),
    ("FROM x\nRUN --mount=type=bind,source=/../etc,target=/h ls\n", "line 2: a bind mount whose source leaves"),
    # written to slip past a line-by-line reading
    ("FROM x\nRUN \\\n  # a comment in the middle\n  --mount=type=bind,from=b,source=/r,target=/h \\\n  ls /h\n",
     "line 2: a bind mount from another stage"),
    ("# escape=`\nFROM x\nRUN `\n --mount=type=bind,from=b,source=/r,target=/h ls\n", "line 3: a bind mount from"),
    ("FROM x\nARG M=type=bind,from=b,source=/r,target=/h\nRUN --mount=$M ls\n",
     "line 3: a mount that names a variable"),
    ("FROM x\nARG S=../..\nRUN --mount=type=cache,source=${S},target=/h ls\n", "line 3: a mount that names"),
    ('FROM x\nRUN --MOUNT="type=bind,from=b,source=/r,target=/h" ls\n', "line 2: a bind mount from another stage"),
    ("FROM x\nONBUILD RUN --mount=type=bind,from=b,source=/r,target=/h ls\n", "line 2: a bind mount from"),
])
def test_escape_shapes_are_refused_with_their_line(text, reason):
    found = containerfile.refusals(text)
    assert len(found) == 1 and found[0].startswith(reason), found


@pytest.mark.parametrize("text", [
    "ARG NBH_BASE_IMAGE\nFROM $NBH_BASE_IMAGE\nRUN pip install --no-index /home/jovyan/course/wheels/*.whl\n",
    "FROM x\nRUN --mount=type=cache,target=/root/.cache pip install numpy\n",
    "FROM x\nRUN --mount=type=bind,source=requirements.txt,target=/r.txt cat /r.txt\n",
    "FROM x\nRUN --mount=type=tmpfs,target=/scratch ls\n",
    "FROM x\n# RUN --mount=type=bind,from=b,source=/r,target=/h (a comment)\nRUN true\n",
])
def test_ordinary_containerfiles_pass(text):
    assert containerfile.refusals(text) == []


def test_continuations_are_one_instruction_at_its_first_line():
    text = "FROM x\n\nRUN a \\\n    b \\\n    c\nCOPY . /x\n"
    assert containerfile.logical_lines(text) == [(1, "FROM x"), (3, "RUN a b c"), (6, "COPY . /x")]

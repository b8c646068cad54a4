# nbhosting: `make demo`, `make test`, `make bench` (see README.md).
# Every target installs what it needs and is fast the second time.

PYTHON ?= /usr/bin/python3
VENV := .venv
PREFIX ?= /usr
DESTDIR ?=
UNITDIR := $(PREFIX)/lib/systemd/system
SANDBOX := $(VENV)/bin/python -m devtools.sandbox
# The Debian release the sandbox runs (make test, demo, bench): the host's by
# default; OS=trixie or OS=bookworm boots a tree of it (devtools/releases.py).
OS ?=
export NBH_OS := $(OS)
STATIC := build/static

APT_PACKAGES := podman uidmap crun fuse-overlayfs slirp4netns debootstrap systemd-container nginx \
	libnginx-mod-http-brotli-static \
	polkitd pkexec dbus systemd libsystemd-dev pkg-config gcc python3-venv python3-dev \
	curl make util-linux e2fsprogs git openssl chromium chromium-driver rpm rpmlint nodejs

.PHONY: deps venv static image lint docs test unit-test bench bench-peer demo demo-down install rpm check-config clean

# Debian packages; daemons are not started on the host (policy-rc.d).
.stamp-deps: Makefile
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${db:Status-Abbrev}' $$p 2>/dev/null | grep -q '^ii' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing:" $$missing; \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	    status=$$?; rm -f /usr/sbin/policy-rc.d; exit $$status; \
	fi
	@# npm builds the image's front-end extension and fetches the statistics
	@# pages' libraries; it comes with some builds of nodejs, as a package of
	@# its own in Debian's.
	@command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
	@touch $@
deps: .stamp-deps

$(VENV)/.stamp: pyproject.toml .stamp-deps
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,lint,docs]'
	@touch $@
venv: $(VENV)/.stamp $(VENV)/.stamp-build $(STATIC)/.stamp

# The statistics pages' plotting libraries (Vega-Lite, vega-embed), pinned by
# static/package-lock.json, from the npm registry (never a CDN): their
# minified bundles in build/static, which `make install` copies and the RPM
# takes in a source archive of its own (its build reaches no registry).
STATIC_BUNDLES := vega/build/vega.min.js vega-lite/build/vega-lite.min.js vega-embed/build/vega-embed.min.js
static/node_modules/.stamp: static/package.json static/package-lock.json .stamp-deps
	cd static && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@
$(STATIC)/.stamp: static/node_modules/.stamp
	rm -rf $(STATIC) && mkdir -p $(STATIC)
	cp $(addprefix static/node_modules/,$(STATIC_BUNDLES)) $(STATIC)/
	@touch $@
static: $(STATIC)/.stamp

# The script keeps its own cache, keyed on its inputs: instant when cached.
# The targets that use the image name this checkout's build to the sandbox.
BUILD_IMAGE := images/build-test-image
WITH_IMAGE = NBH_IMAGE_TAR=$$($(BUILD_IMAGE)) && export NBH_IMAGE_TAR &&
image: venv
	@$(BUILD_IMAGE)

# pyflakes' checks (ruff, pyproject.toml's [tool.ruff]): an unused or
# shadowed import, a name defined nowhere. Before every test run.
lint: venv
	$(VENV)/bin/ruff check --quiet nbhosting devtools tests bench docs

# The manual (docs/, Sphinx and MyST Markdown) in build/docs/html; a warning
# (a broken link or reference, a bad directive) fails it. Nothing is fetched.
docs: venv
	$(VENV)/bin/sphinx-build -q -W --keep-going -n -b html docs build/docs/html

unit-test: lint
	$(VENV)/bin/pytest -m 'not sandbox'

test: lint image
	@$(WITH_IMAGE) $(VENV)/bin/pytest

bench: venv image
	@$(WITH_IMAGE) $(VENV)/bin/python -m bench

# JupyterHub beside us (bench/peer/): installed from PyPI and npm at pinned
# versions under /var/cache/nbhosting by bench/peer/install (cached), and
# measured in the sandbox in the same run as nbhosting. Not part of `make test`.
bench-peer: venv image
	@command -v npm > /dev/null || { echo "bench-peer needs Node.js and npm" >&2; exit 1; }
	@$(WITH_IMAGE) PEER=$$(bench/peer/install) && $(VENV)/bin/python -m bench.peer "$$PEER"

demo: venv image
	@$(WITH_IMAGE) $(SANDBOX) up
	$(VENV)/bin/python -m devtools.demo

demo-down:
	$(SANDBOX) down

# What the package installs (the RPM spec runs `make install DESTDIR=...`);
# the Python package itself is installed by pip.
install:
	install -D -m 0644 -t $(DESTDIR)$(UNITDIR) units/*.socket units/*.service units/*.timer units/*.slice
	install -D -m 0644 polkit/nbhosting.rules $(DESTDIR)$(PREFIX)/share/polkit-1/rules.d/50-nbhosting.rules
	install -D -m 0644 packaging/rpm/nbhosting.sysusers $(DESTDIR)$(PREFIX)/lib/sysusers.d/nbhosting.conf
	install -D -m 0644 packaging/rpm/nbhosting.tmpfiles $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/nbhosting.conf
	install -D -m 0644 -t $(DESTDIR)$(PREFIX)/lib/nbhosting packaging/containers/*
	install -D -m 0644 nginx/nbhosting.conf $(DESTDIR)/etc/nginx/conf.d/nbhosting.conf
	install -D -m 0644 -t $(DESTDIR)$(PREFIX)/share/nbhosting/_errors nginx/errors/*.html
	install -D -m 0644 -t $(DESTDIR)$(PREFIX)/share/nbhosting/nginx nginx/student-server.conf nginx/jupyter-static.conf
	@test -f $(STATIC)/vega-embed.min.js || { echo "make install: no $(STATIC): run make static first"; exit 1; }
	install -D -m 0644 -t $(DESTDIR)$(PREFIX)/share/nbhosting/_static $(STATIC)/*.min.js
	# the manual's pages, as Markdown (the units' Documentation= name them)
	install -D -m 0644 -t $(DESTDIR)$(PREFIX)/share/doc/nbhosting README.md docs/*.md packaging/nbhosting.toml.example

# The source and binary RPMs of HEAD, from `git archive` (nothing uncommitted
# slips in), in build/rpm, linted. Debian's rpm lacks Fedora's macros and
# knows none of the build requirements: packaging/rpm/macros.debian stands
# in, with the venv's Python (pip, the build backend, pytest). Some filters
# are for one rpmlint only (2.7's spelling and Requires: checks, Debian 13's),
# so an unused one is no error.
RPM_TOP := build/rpm
RPM_DEBIAN = $(if $(shell rpm --eval '%{?pyproject_wheel}'),,--nodeps \
	--define "_debian_macros $(abspath $(RPM_TOP))/packaging/rpm/macros.debian" \
	--define "_debian_build_python $(abspath $(VENV))/bin/python")
rpm: venv
	rm -rf $(RPM_TOP) && mkdir -p $(RPM_TOP)/SOURCES
	git archive HEAD packaging/rpm | tar -x -C $(RPM_TOP) && chmod -R go-w $(RPM_TOP)/packaging
	version=$$(sed -n 's/^Version: *//p' $(RPM_TOP)/packaging/rpm/nbhosting.spec) && \
	git archive --format=tar.gz --prefix=nbhosting-$$version/ -o $(RPM_TOP)/SOURCES/nbhosting-$$version.tar.gz HEAD && \
	tar -czf $(RPM_TOP)/SOURCES/nbhosting-static-$$version.tar.gz --owner=0 --group=0 $(STATIC)/*.min.js
	cp $(RPM_TOP)/packaging/rpm/nbhosting.sysusers $(RPM_TOP)/SOURCES/
	rpmbuild -ba --quiet $(RPM_DEBIAN) --define "_topdir $(abspath $(RPM_TOP))" $(RPM_TOP)/packaging/rpm/nbhosting.spec
	rpmlint --strict --ignore-unused-rpmlintrc -r $(RPM_TOP)/packaging/rpm/nbhosting.rpmlintrc $(RPM_TOP)/packaging/rpm/nbhosting.spec \
	    $(RPM_TOP)/RPMS/noarch/*.rpm $(RPM_TOP)/SRPMS/*.rpm

# pyproject.toml's build requirements, for builds without isolation (make rpm).
$(VENV)/.stamp-build: pyproject.toml $(VENV)/.stamp
	$(VENV)/bin/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
	    | xargs $(VENV)/bin/pip install -q
	@touch $@

clean:
	rm -rf $(VENV) .stamp-deps .pytest_cache build static/node_modules

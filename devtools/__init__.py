"""What develops and tests nbhosting, not what it is: the sandbox (a private
systemd booted from this checkout), the other Debian release booted beside
it, the RPM installed as dnf would, and the demo. They assume a checkout
(`make test`, `make demo`, `make bench` run them from its root); the
package, and the RPM, hold none of them."""

"""make bench-peer: JupyterHub measured beside nbhosting (see __main__.py)."""

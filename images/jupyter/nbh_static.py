"""Notebook's scripts from the site's shared, immutable copy of this image's.

The host extracts each image's static files once (nbhosting/jupyter_static.py)
and nginx serves them under /_jupyter/<image id>/, the same URL for every
student of the image: a browser fetches and compiles them once, not once
per student's server. The start passes that URL (NBH_STATIC_URL) and the
fingerprint of what was extracted (NBH_STATIC_FINGERPRINT): the names of
Notebook's main bundle and of each federated extension's entry, which
webpack names by their content. The page takes the shared copy only when
this server's own files have the same fingerprint; otherwise (an image
tagged again since, an extension outside the extracted folders) it keeps
its server's own, as without.
"""

import functools
import hashlib
import os


def fingerprint(main_bundles, extensions):
    """The same text as the host's, from the same names (jupyter_static.py)."""
    names = [f"static/{name}" for name in main_bundles]
    names += [f"labextensions/{name}/{load}" for name, load in extensions]
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:32]


@functools.cache
def own_fingerprint(extensions):
    """This server's: Notebook's main bundle, and the page config's extensions."""
    import notebook  # noqa: PLC0415 (imported already when a page asks)

    static = os.path.join(os.path.dirname(notebook.__file__), "static")
    main = [name for name in os.listdir(static) if name.startswith("main.") and name.endswith(".js")]
    return fingerprint(main, extensions)


def page_config_hook(handler, page_config):
    """tornado_settings["page_config_hook"]: Notebook's pages only (JupyterLab's
    /lab has static files of its own, not extracted)."""
    url = os.environ.get("NBH_STATIC_URL", "")
    expected = os.environ.get("NBH_STATIC_FINGERPRINT", "")
    if not (url and expected and getattr(handler, "name", None) == "notebook"):
        return page_config
    extensions = tuple(sorted((ext.get("name", ""), ext.get("load", ""))
                              for ext in page_config.get("federated_extensions", [])))
    if own_fingerprint(extensions) == expected:
        page_config["fullStaticUrl"] = url + "static"
        page_config["fullLabextensionsUrl"] = url + "labextensions"
    elif not _warned:
        _warned.append(True)  # once per server: in its journal, for the operator
        handler.log.warning("nbh_static: the site's copy at %s is not this image's files (an image changed "
                            "since `nbh jupyter-static`?): the page takes this server's own", url)
    return page_config


_warned = []

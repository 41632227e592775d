"""Credentials never leave the process: what is stored, written or printed has none.

A storage URL (``postgresql+psycopg://user:PASSWORD@host/db``) and any other URL a study
file may hold (an object store's, a data file's) can carry a password in its user info or
in its query (``?password=...``). The study's stored configuration, ``config.resolved.yaml``,
log lines, generated Slurm and Kubernetes files and worker command lines get the URL
without it; a command that needs the password takes the URL from ``--storage``, the
``SWEEPER_STORAGE`` environment variable or the study file, or lets the driver find it
(PostgreSQL's ``PGPASSFILE`` / ``~/.pgpass``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

# The environment variable every command reads the storage URL from when --storage is not
# given: launchers pass the URL this way, never on a command line or in a file they write.
STORAGE_ENV = "SWEEPER_STORAGE"

# The study-file keys whose value may be a URL with a credential in it; "[]" walks a list.
URL_KEYS = ("storage", "checkpoint_root", "dataset.path", "warm_start.sources[].storage")

# Query parameters that carry a secret (libpq's password=, object stores' signed keys).
_SECRET_QUERY_KEYS = frozenset(
    {"password", "passwd", "pwd", "secret", "token", "access_token", "secret_key", "sig"}
)


# user[:password]@ right after the scheme, as SQLAlchemy reads it: the password runs to the
# first "@" and may hold "/", "?" or "#" (which urllib would take for the path or query).
_USERINFO = re.compile(r"(?P<user>[^:/@?#]*)(?::(?P<password>[^@]*))?@")


def drop_secret_query(url: str, replacement: str | None = None) -> str:
    """``url`` without (or, with ``replacement``, with masked) secret query parameters."""
    head, mark, query = url.partition("?")
    if not mark:
        return url
    fragment = ""
    if "#" in query:
        query, fragment = query.split("#", 1)
        fragment = "#" + fragment
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(key.lower() in _SECRET_QUERY_KEYS for key, _ in pairs):
        return url
    kept = [
        (key, replacement) if key.lower() in _SECRET_QUERY_KEYS else (key, value)
        for key, value in pairs
        if key.lower() not in _SECRET_QUERY_KEYS or replacement is not None
    ]
    return f"{head}?{urlencode(kept, safe='*')}{fragment}" if kept else f"{head}{fragment}"


def without_credentials(url: str) -> str:
    """``url`` without its password (the user name stays) and without secret query
    parameters; anything that is not a URL with a scheme is returned as it is."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    userinfo = _USERINFO.match(rest)
    if userinfo is not None and userinfo.group("password") is not None:
        user = userinfo.group("user")
        rest = (f"{user}@" if user else "") + rest[userinfo.end() :]
    return drop_secret_query(f"{scheme}://{rest}")


def scrub_document(document: dict[str, Any]) -> dict[str, Any]:
    """A study's configuration document (as stored) with every URL key's credentials
    dropped; the input is not changed."""
    scrubbed: dict[str, Any] = _copied(document)
    for dotted in URL_KEYS:
        *parents, leaf = dotted.split(".")
        nodes: list[Any] = [scrubbed]
        for parent in parents:
            name = parent.removesuffix("[]")
            found = [node.get(name) for node in nodes if isinstance(node, dict)]
            if parent.endswith("[]"):
                found = [item for value in found if isinstance(value, list) for item in value]
            nodes = found
        for node in nodes:
            if isinstance(node, dict) and isinstance(node.get(leaf), str):
                node[leaf] = without_credentials(node[leaf])
    return scrubbed


def _copied(value: Any) -> Any:
    """A copy of a document's dicts and lists, so scrubbing never changes its input."""
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copied(item) for item in value]
    return value

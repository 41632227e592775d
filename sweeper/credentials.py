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

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# The environment variable every command reads the storage URL from when --storage is not
# given: launchers pass the URL this way, never on a command line or in a file they write.
STORAGE_ENV = "SWEEPER_STORAGE"

# The study-file keys whose value may be a URL with a credential in it.
URL_KEYS = ("storage", "checkpoint_root", "dataset.path")

# Query parameters that carry a secret (libpq's password=, object stores' signed keys).
_SECRET_QUERY_KEYS = frozenset(
    {"password", "passwd", "pwd", "secret", "token", "access_token", "secret_key", "sig"}
)


def without_credentials(url: str) -> str:
    """``url`` without its password (the user name stays) and without secret query
    parameters; anything that is not a URL with a network location is returned as it is."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at:
        user = userinfo.partition(":")[0]
        netloc = f"{user}@{host}" if user else host
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        kept = [(key, value) for key, value in pairs if key.lower() not in _SECRET_QUERY_KEYS]
        if len(kept) != len(pairs):
            query = urlencode(kept)
    if netloc == parts.netloc and query == parts.query:
        return url  # urlunsplit would not give back every URL as written (sqlite:////x)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def has_credentials(url: str) -> bool:
    return without_credentials(url) != url


def scrub_document(document: dict[str, Any]) -> dict[str, Any]:
    """A study's configuration document (as stored) with every URL key's credentials
    dropped; the input is not changed."""
    scrubbed = {
        key: dict(value) if isinstance(value, dict) else value for key, value in document.items()
    }
    for dotted in URL_KEYS:
        *parents, leaf = dotted.split(".")
        node: Any = scrubbed
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(leaf), str):
            node[leaf] = without_credentials(node[leaf])
    return scrubbed

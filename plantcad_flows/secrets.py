"""Keeping secret values out of everything the project stores, prints or shows.

A config is hashed, saved next to its outputs and rendered in the Prefect UI; a Prefect Variable,
an artifact, a log line and a rendered Kubernetes manifest are all readable by anyone with access
to the server. So tokens are resolved at run time from the environment or a Secret block, and
whatever text or URL might carry one passes through here first:

* `strip_url_credentials`: `https://user:TOKEN@host/...` -> `https://host/...` (git remotes,
  S3 endpoints);
* `redact`: the values of the secret environment variables, replaced in free text (command
  output that is printed);
* `mask_env_entries`: literal values of secret-looking variables in a manifest's env list;
  `valueFrom` references to Kubernetes Secrets stay, they hold no value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "<redacted>"
# Variables whose values are secrets wherever they appear.
SECRET_ENV_NAMES = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "PREFECT_API_KEY",
)
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|AUTH)", re.IGNORECASE)
_MIN_SECRET_LEN = 4  # shorter values would redact ordinary words


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name says that its value is a secret."""
    return name in SECRET_ENV_NAMES or bool(SECRET_NAME.search(name))


def strip_url_credentials(url: str) -> str:
    """The URL without its `user:password@` part; anything that is not a URL comes back as is."""
    parts = urlsplit(url)
    if not parts.netloc or "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def secret_values(env: Mapping[str, str], names: Iterable[str] | None = None) -> list[str]:
    """The values of the secret variables in `env` that are long enough to redact safely."""
    chosen = names if names is not None else [n for n in env if is_secret_name(n)]
    return sorted(
        {env[n] for n in chosen if env.get(n) and len(env[n]) >= _MIN_SECRET_LEN}, key=len, reverse=True
    )


def redact(text: str, env: Mapping[str, str], names: Iterable[str] | None = None) -> str:
    """`text` with every secret value of `env` replaced, and credentials stripped from URLs."""
    for value in secret_values(env, names):
        text = text.replace(value, MASK)
    return re.sub(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"]+", lambda m: strip_url_credentials(m.group(0)), text)


def mask_env_entries(entries: list[dict[str, Any]] | None) -> None:
    """In place: literal values of secret-looking entries of a Kubernetes env list."""
    for entry in entries or []:
        if entry.get("value") and is_secret_name(entry.get("name", "")):
            entry["value"] = MASK

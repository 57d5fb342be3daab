"""PostgreSQL URLs that may carry secrets: expand, parse, show and check them without leaking one.

Used for the shared state store (``state_url``) and the LiteLLM proxy's database (the audit's
``spend_logs_db``). A URL may hold ``${VAR}`` references, expanded only to connect (libpq's
``PGPASSWORD`` and ``~/.pgpass`` work too). It is only ever shown as ``describe`` writes it:
user, host, port and database, never a password or the query string (which can hold one too).
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from workhorse.errors import ConfigError

ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand(url: str) -> str:
    """``${VAR}`` references replaced from the environment; an unset one is named, never guessed."""

    def value(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"the database URL refers to ${{{name}}}, which is not set")
        return os.environ[name]

    return ENV_REFERENCE.sub(value, url)


def split_schema(url: str) -> tuple[str, str | None]:
    """Prisma's ``?schema=`` out of the URL (libpq refuses it), and that schema."""
    if "://" not in url:
        return url, None
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def parse(url: str) -> dict:
    """libpq's reading of the URL; a malformed one is a ConfigError that does not quote it."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        return conninfo_to_dict(split_schema(url)[0])
    except Exception:  # libpq's message quotes the string, password included: never repeated
        raise ConfigError(
            "the database URL is neither a postgresql:// URL nor a libpq connection string"
        ) from None


def describe(url: str) -> str:
    """The database as it may be shown: user, host, port and name; never a password or options."""
    info = parse(url)
    user = f"{info['user']}@" if info.get("user") else ""
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{user}{info.get('host', '')}{port}/{info.get('dbname', '')}"


def scrub(message: str, url: str) -> str:
    """A driver's error, first line only: libpq names host and port, not passwords; still, never
    let one through."""
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    password = parse(url).get("password")
    return first.replace(password, "***") if password else first


def refuse_literal_password(url: str | None) -> str | None:
    """For URLs in a plan, which lives in git: a ``${VAR}`` reference is fine, a password is not."""
    password = urlsplit(url).password if url and "://" in url else None
    if password and not ENV_REFERENCE.fullmatch(password):
        raise ValueError(
            "the URL must not hold a password: write ${VAR} (expanded at connect time), "
            "or use PGPASSWORD or ~/.pgpass"
        )
    return url

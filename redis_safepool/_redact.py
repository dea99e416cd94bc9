"""Keep secrets out of text meant for people: URLs with their password masked, messages scrubbed."""

from __future__ import annotations

import re
from typing import Any, Iterable, Optional

__all__ = ["MASK", "redact_url", "scrub", "password_of"]

MASK = "***"

# scheme://user:password@...: everything between the first ':' of the
# userinfo and its last '@' is the password (it may itself hold ':' or '@').
_USERINFO = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/?#:@]*):(?P<pw>[^/?#]*)@")
# ?password=... / &password=... in the query string
_QUERY_PW = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&#]*)", re.IGNORECASE)


def redact_url(url: Any) -> str:
    """The URL as text with its password (userinfo or ``password=`` query) masked.

    Works on URLs that do not parse (a bad port, a bad path), which is when
    they end up in error messages.
    """
    text = url if isinstance(url, str) else repr(url)
    text = _USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", text, count=1)
    return _QUERY_PW.sub(lambda m: f"{m.group('head')}{MASK}", text)


def password_of(kwargs: Any) -> Optional[str]:
    """The password in connection kwargs, when there is one to keep secret."""
    if not isinstance(kwargs, dict):
        return None
    password = kwargs.get("password")
    if isinstance(password, bytes):
        password = password.decode("utf-8", "replace")
    return password if isinstance(password, str) and password else None


def scrub(text: str, secrets: Iterable[Optional[str]]) -> str:
    """``text`` with every copy of each secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text

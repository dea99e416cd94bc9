"""Keep secrets out of text meant for people: URLs with their password masked, messages scrubbed."""

from __future__ import annotations

import re
from typing import Any, Iterable, List, Optional

__all__ = ["MASK", "redact_url", "scrub", "password_of", "secrets_of", "scrub_exception"]

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


# A server that does not know a command quotes its arguments back (Redis before 6:
# "unknown command 'HELLO', with args beginning with: '3' 'AUTH' 'user' '<password>'"),
# and a non-Redis service may echo the request itself. Whatever follows an AUTH word
# on that line is a credential, also one the pool never saw (a credential provider's
# password or token): it is masked.
_AUTH_ECHO = re.compile(r"(\bAUTH\b['\"]?)[^\r\n]+", re.IGNORECASE)


def scrub(text: str, secrets: Iterable[Optional[str]]) -> str:
    """``text`` with every copy of each secret, and whatever an echoed AUTH quotes, masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return _AUTH_ECHO.sub(lambda m: f"{m.group(1)} {MASK}", text)


def secrets_of(kwargs: Any) -> List[str]:
    """The passwords connections made with these kwargs send: the ``password`` kwarg and
    a static credential provider's (redis-py's ``UsernamePasswordCredentialProvider``)."""
    found = [password_of(kwargs)]
    provider = kwargs.get("credential_provider") if isinstance(kwargs, dict) else None
    password = getattr(provider, "password", None)
    if isinstance(password, bytes):
        password = password.decode("utf-8", "replace")
    found.append(password if isinstance(password, str) else None)
    return [s for s in found if s]


def scrub_exception(exc: BaseException, secrets: Iterable[Optional[str]]) -> None:
    """Mask the secrets in ``exc``'s string arguments and in those of the exceptions it
    was raised from, in place: it is on its way to a caller, a log or an HTTP body."""
    secrets = list(secrets)
    seen = set()
    for _ in range(16):  # a bounded walk down __cause__/__context__
        if exc is None or id(exc) in seen:
            return
        seen.add(id(exc))
        args = getattr(exc, "args", None)
        if isinstance(args, tuple) and any(isinstance(a, str) for a in args):
            clean = tuple(scrub(a, secrets) if isinstance(a, str) else a for a in args)
            if clean != args:
                try:
                    exc.args = clean
                except (AttributeError, TypeError):
                    pass
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]

"""A parser for WWW-Authenticate (RFC 9110 section 11.6.1), strict enough to
catch malformed challenges: a list of challenges, each a scheme followed by
either a token68 or comma-separated auth-params whose values are tokens or
quoted-strings."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN68 = r"[A-Za-z0-9\-._~+/]+=*"
_OWS = r"[ \t]*"


@dataclass
class Challenge:
    scheme: str
    params: dict[str, str] = field(default_factory=dict)  # names lower-cased (they are case-insensitive)
    token68: str | None = None


class ParseError(ValueError):
    pass


def parse(header: str) -> list[Challenge]:
    s = header
    i = 0
    challenges: list[Challenge] = []

    def skip_ows() -> None:
        nonlocal i
        m = re.compile(_OWS).match(s, i)
        i = m.end()

    def skip_commas() -> None:
        nonlocal i
        while True:
            skip_ows()
            if i < len(s) and s[i] == ",":
                i += 1
                continue
            return

    skip_commas()
    while i < len(s):
        m = re.compile(_TOKEN).match(s, i)
        if not m:
            raise ParseError(f"expected an auth-scheme at {i}: {s!r}")
        challenge = Challenge(scheme=m.group())
        challenges.append(challenge)
        i = m.end()
        if i < len(s) and s[i] not in " \t,":
            raise ParseError(f"unexpected {s[i]!r} after scheme at {i}: {s!r}")
        skip_ows()
        # token68?
        m = re.compile(_TOKEN68 + _OWS + r"(?:,|$)").match(s, i)
        if m:
            challenge.token68 = s[i:m.end()].rstrip(", \t")
            i = m.end()
            skip_commas()
            continue
        # auth-params, until the next challenge (a token not followed by '=')
        while i < len(s):
            skip_commas()
            m = re.compile(f"({_TOKEN}){_OWS}={_OWS}").match(s, i)
            if not m:
                break  # next challenge's scheme (or garbage, caught by the outer loop)
            name = m.group(1).lower()
            i = m.end()
            if i < len(s) and s[i] == '"':
                i += 1
                value = []
                while True:
                    if i >= len(s):
                        raise ParseError(f"unterminated quoted-string: {s!r}")
                    c = s[i]
                    if c == "\\":
                        if i + 1 >= len(s):
                            raise ParseError(f"dangling escape: {s!r}")
                        value.append(s[i + 1])
                        i += 2
                    elif c == '"':
                        i += 1
                        break
                    else:
                        value.append(c)
                        i += 1
                val = "".join(value)
            else:
                m = re.compile(_TOKEN).match(s, i)
                if not m:
                    raise ParseError(f"expected a token or quoted-string at {i}: {s!r}")
                val = m.group()
                i = m.end()
            if name in challenge.params:
                raise ParseError(f"parameter {name!r} given twice: {s!r}")
            challenge.params[name] = val
            skip_ows()
            if i < len(s) and s[i] != ",":
                raise ParseError(f"expected ',' at {i}: {s!r}")
        skip_commas()
    if not challenges:
        raise ParseError(f"no challenge in {s!r}")
    return challenges


def bearer(header: str) -> Challenge:
    """The single Bearer challenge in the header (scheme compared case-insensitively)."""
    found = [c for c in parse(header) if c.scheme.lower() == "bearer"]
    if len(found) != 1:
        raise ParseError(f"expected exactly one Bearer challenge in {header!r}")
    return found[0]

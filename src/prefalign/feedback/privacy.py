"""Privacy for feedback before it is shared: keyed pseudonyms for raters, scrubbing of contact details.

* :func:`pseudonymize_id` / :func:`pseudonymize_records` replace rater ids with HMAC-SHA256
  pseudonyms (RFC 2104). The same id and key always give the same pseudonym, so a rater's records
  stay linked across files and batches; without the key the mapping cannot be recomputed, which a
  plain unkeyed hash would not give: rater ids (e-mail addresses, employee numbers) are few and
  guessable, and hashing every candidate would reverse it. The key comes from the argument or the
  environment variable ``PREFALIGN_PSEUDONYM_KEY``; there is no default key, because a default
  would be public and so no protection. Keep the key secret and stable; a new key gives new
  pseudonyms.
* :func:`scrub_text` / :func:`scrub_records` replace e-mail addresses with ``[EMAIL]`` and phone
  numbers with ``[PHONE]`` in every text field. This is a pattern filter, not a guarantee: it aims
  at the common written forms (see :data:`PHONE_PATTERN`) and leaves names, addresses and other
  identifiers alone. Ids and ``metadata`` are not scrubbed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from prefalign.feedback.schema import (
    Comparison,
    Demonstration,
    Edit,
    Feedback,
    RankedResponse,
    Ranking,
    Rating,
)
from prefalign.feedback.validate import Text

KEY_ENV = "PREFALIGN_PSEUDONYM_KEY"
MIN_KEY_BYTES = 16
"""Shortest key accepted: 128 bits, so the key itself cannot be guessed by trying them all."""
PSEUDONYM_PREFIX = "r_"
PSEUDONYM_HEX = 16
"""Hex digits kept of the HMAC: 64 bits, so a collision among a million raters has odds ~3e-8."""


class PseudonymKeyError(ValueError):
    """No usable pseudonymisation key: neither given nor in ``PREFALIGN_PSEUDONYM_KEY``, or too short."""


def pseudonym_key(key: bytes | str | None = None) -> bytes:
    """The key to use: ``key`` if given, else the environment variable ``PREFALIGN_PSEUDONYM_KEY``.

    A str key is taken as UTF-8. Raises :class:`PseudonymKeyError` when there is none or it is
    shorter than :data:`MIN_KEY_BYTES` bytes; never falls back to a built-in key.
    """
    source = "the key argument"
    if key is None:
        key = os.environ.get(KEY_ENV)
        source = f"${KEY_ENV}"
        if not key:
            raise PseudonymKeyError(
                f"no pseudonymisation key: pass key=... or set {KEY_ENV} to a secret of at least "
                f"{MIN_KEY_BYTES} bytes, e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`, and keep it to map ids again"
            )
    raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if len(raw) < MIN_KEY_BYTES:
        raise PseudonymKeyError(
            f"the pseudonymisation key from {source} has {len(raw)} bytes; use at least {MIN_KEY_BYTES} "
            "(a short key can be found by trying them all, which undoes the pseudonyms)"
        )
    return raw


def pseudonymize_id(rater_id: str, key: bytes | str | None = None) -> str:
    """``"r_"`` + the first 16 hex digits of HMAC-SHA256(key, rater_id as UTF-8).

    Deterministic for one key, unrelated across keys. Pseudonymising a pseudonym gives a new
    pseudonym, not the same one: apply it once, to raw ids.
    """
    digest = hmac.new(pseudonym_key(key), str(rater_id).encode("utf-8"), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:PSEUDONYM_HEX]


def pseudonymize_records(records: Iterable[Feedback], key: bytes | str | None = None) -> list[Feedback]:
    """New records with every ``rater_id`` replaced by :func:`pseudonymize_id`; the inputs are unchanged.

    The key is resolved once, so a missing key fails before any record is touched.
    """
    raw = pseudonym_key(key)
    cache: dict[str, str] = {}
    out: list[Feedback] = []
    for record in records:
        if record.rater_id not in cache:
            cache[record.rater_id] = pseudonymize_id(record.rater_id, raw)
        out.append(dataclasses.replace(record, rater_id=cache[record.rater_id]))
    return out


# ------------------------------------------------------------------------------------------ scrubbing

EMAIL_PATTERN = re.compile(
    r"(?<![\w.%+-])"  # not the tail of a longer token
    r"[\w.%+-]+@(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,}"  # \w: non-ASCII names too
    r"(?![\w-])"
)
"""An e-mail address: local part, ``@``, dot-separated domain labels, a letters-only top-level domain."""

_SEP = r"[ .\-\u00a0]"  # space, dot, dash, no-break space between digit groups
PHONE_PATTERN = re.compile(
    r"(?<![\w.+/\-])"  # not inside a longer number, version, date or word
    r"(?:"
    # International: + country code, then groups of digits (an area code may be in parentheses,
    # e.g. "+44 (0)20 7946 0958"). Digit count is checked afterwards (E.164: at most 15).
    rf"\+\d{{1,3}}(?:{_SEP}?\(\d{{1,4}}\)|{_SEP}?\d{{1,5}}){{1,7}}"
    r"|"
    # North American: optional 1, area code (in parentheses or followed by a separator), 3 + 4 digits.
    rf"(?:1{_SEP}?)?(?:\(\d{{3}}\){_SEP}?|\d{{3}}{_SEP})\d{{3}}{_SEP}\d{{4}}"
    r"|"
    # National with a trunk 0 (UK, France, Germany, ...): 0 + area code, then separated groups.
    rf"(?:\(0\d{{1,4}}\){_SEP}?|0\d{{1,4}}(?:{_SEP}|/){{1,2}})\d{{2,8}}(?:(?:{_SEP}|/){{1,2}}\d{{2,8}}){{0,3}}"
    r")"
    r"(?![\w+]|[.\-/]\d)"  # ends at a number's end, so "555-123-4567." keeps its full stop
)
"""Phone numbers in common written forms; candidates are then filtered by :func:`_looks_like_phone`.

Not matched on purpose: runs of digits with no ``+`` and no separator ("5551234567" is as likely an
order number or a timestamp), local numbers without an area code ("555-1234"), and forms with other
separators (commas, slashes outside national numbers).
"""

# A date with a four-digit year (1900-2099), e.g. "05.01.2024" or "2024/01/05", inside a candidate.
_DATE = re.compile(r"\b(?:\d{1,2}[-./]\d{1,2}[-./](?:19|20)\d\d|(?:19|20)\d\d[-./]\d{1,2}[-./]\d{1,2})\b")


def _looks_like_phone(candidate: str) -> bool:
    digits = sum(ch.isdigit() for ch in candidate)
    if candidate.startswith("+"):
        return 7 <= digits <= 15
    # A trunk-0 candidate can be a date ("05.01.2024 12 ...") or too short to be a number with an
    # area code; North American matches always have 10 or 11 digits.
    return 9 <= digits <= 15 and not _DATE.search(candidate)


def _replace_phone(match: re.Match[str], token: str) -> str:
    return token if _looks_like_phone(match.group(0)) else match.group(0)


def _scrub_str(text: str, email_token: str, phone_token: str) -> str:
    # E-mail first: an address may hold digit runs that would otherwise read as a phone number.
    text = EMAIL_PATTERN.sub(email_token, text)
    return PHONE_PATTERN.sub(lambda m: _replace_phone(m, phone_token), text)


def _scrub_message(message: Mapping[str, Any], email_token: str, phone_token: str) -> dict[str, Any]:
    out = dict(message)
    content = message.get("content")
    if isinstance(content, str):
        out["content"] = _scrub_str(content, email_token, phone_token)
    elif isinstance(content, list):  # multimodal parts: only text parts carry text
        out["content"] = [
            {**part, "text": _scrub_str(part["text"], email_token, phone_token)}
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
            else part
            for part in content
        ]
    return out


def scrub_text(text: Text, *, email_token: str = "[EMAIL]", phone_token: str = "[PHONE]") -> Text:
    """``text`` with e-mail addresses and phone numbers replaced by ``email_token`` / ``phone_token``.

    Takes a string or a list of chat messages (``{"role", "content"}``, content a string or a list
    of ``{"type": "text", "text": ...}`` parts) and returns the same shape, new objects throughout.
    """
    if isinstance(text, str):
        return _scrub_str(text, email_token, phone_token)
    if isinstance(text, list):
        return [_scrub_message(m, email_token, phone_token) for m in text]
    raise TypeError(f"expected a string or a list of messages, got {type(text).__name__}")


def _scrub_fields(record: Feedback, scrub: Any) -> Feedback:
    changes: dict[str, Any] = {"prompt": scrub(record.prompt)}
    if isinstance(record, (Rating, Demonstration)):
        changes["response"] = scrub(record.response)
    elif isinstance(record, Comparison):
        changes["a"], changes["b"] = scrub(record.a), scrub(record.b)
    elif isinstance(record, Edit):
        changes["original"], changes["edited"] = scrub(record.original), scrub(record.edited)
        if record.reason is not None:
            changes["reason"] = scrub(record.reason)
    elif isinstance(record, Ranking):
        changes["responses"] = tuple(RankedResponse(r.id, scrub(r.text)) for r in record.responses)
    else:
        raise TypeError(f"expected a feedback record, got {type(record).__name__}")
    return dataclasses.replace(record, **changes)


def scrub_records(
    records: Iterable[Feedback], *, email_token: str = "[EMAIL]", phone_token: str = "[PHONE]"
) -> list[Feedback]:
    """New records with :func:`scrub_text` applied to every text field of every kind.

    The fields: ``prompt``; rating and demonstration ``response``; comparison ``a`` and ``b``; edit
    ``original``, ``edited`` and ``reason``; each ranking response's ``text``. Ids (including
    response ids derived from the unscrubbed text, which stay stable that way) and ``metadata`` are
    kept as they are.
    """

    def scrub(text: Text) -> Text:
        return scrub_text(text, email_token=email_token, phone_token=phone_token)

    return [_scrub_fields(record, scrub) for record in records]

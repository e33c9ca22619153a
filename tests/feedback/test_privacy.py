"""Pseudonyms for raters and scrubbing of e-mail addresses and phone numbers."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from prefalign.feedback.privacy import (
    KEY_ENV,
    PseudonymKeyError,
    pseudonym_key,
    pseudonymize_id,
    pseudonymize_records,
    scrub_records,
    scrub_text,
)
from prefalign.feedback.schema import (
    Comparison,
    Demonstration,
    Edit,
    RankedResponse,
    Ranking,
    Rating,
    to_dict,
)

KEY = "k" * 32
OTHER_KEY = b"another-secret-key-of-32-bytes!!"


# -------------------------------------------------------------------------------------- pseudonyms


def test_pseudonym_is_truncated_hmac_sha256() -> None:
    expected = hmac.new(KEY.encode(), b"alice@example.com", hashlib.sha256).hexdigest()[:16]
    assert pseudonymize_id("alice@example.com", KEY) == "r_" + expected


def test_pseudonym_is_deterministic_and_key_sensitive() -> None:
    assert pseudonymize_id("alice", KEY) == pseudonymize_id("alice", KEY.encode())  # str key = its UTF-8
    assert pseudonymize_id("alice", KEY) != pseudonymize_id("alice", OTHER_KEY)
    assert pseudonymize_id("alice", KEY) != pseudonymize_id("alice ", KEY)
    assert pseudonymize_id("alice", KEY) != pseudonymize_id("bob", KEY)


def test_no_collisions_on_10k_ids() -> None:
    ids = [f"rater-{i}" for i in range(10_000)]
    pseudonyms = {pseudonymize_id(i, KEY) for i in ids}
    assert len(pseudonyms) == len(ids)
    assert all(p.startswith("r_") and len(p) == 18 for p in pseudonyms)


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    assert pseudonymize_id("alice") == pseudonymize_id("alice", KEY)
    assert pseudonymize_id("alice", OTHER_KEY) != pseudonymize_id("alice")  # an explicit key wins


def test_missing_or_short_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(PseudonymKeyError, match=KEY_ENV):
        pseudonymize_id("alice")
    with pytest.raises(PseudonymKeyError, match=KEY_ENV):
        pseudonymize_records([_records()[0]])
    monkeypatch.setenv(KEY_ENV, "")
    with pytest.raises(PseudonymKeyError, match="no pseudonymisation key"):
        pseudonym_key()
    monkeypatch.setenv(KEY_ENV, "short")
    with pytest.raises(PseudonymKeyError, match=rf"\${KEY_ENV} has 5 bytes"):
        pseudonym_key()
    with pytest.raises(PseudonymKeyError, match="key argument has 3 bytes"):
        pseudonymize_id("alice", b"abc")
    assert issubclass(PseudonymKeyError, ValueError)


def test_pseudonymize_records_of_every_kind() -> None:
    records = _records()
    out = pseudonymize_records(records, KEY)
    assert [r.rater_id for r in out] == [pseudonymize_id(r.rater_id, KEY) for r in records]
    assert out[0].rater_id == out[1].rater_id  # one rater stays one pseudonym
    for before, after in zip(records, out, strict=True):
        assert type(after) is type(before)
        assert {**to_dict(after), "rater_id": None} == {**to_dict(before), "rater_id": None}
    assert records[0].rater_id == "alice@example.com"  # the inputs are untouched


# --------------------------------------------------------------------------------------- scrubbing

EMAILS = [
    "john.doe@example.com",
    "a.b+tag@mail.co.uk",
    "first_last@sub.domain.org",
    "UPPER@EXAMPLE.COM",
    "zoë@exämple.de",
]
PHONES = [
    "+1 (555) 123-4567",
    "+1 555 123 4567",
    "+1.555.123.4567",
    "+15551234567",
    "+44 20 7946 0958",
    "+44 (0)20 7946 0958",
    "+33 6 12 34 56 78",
    "+49-30-1234567",
    "+91 98765 43210",
    "+86 138 0013 8000",
    "555-123-4567",
    "(555) 123-4567",
    "555.123.4567",
    "555 123 4567",
    "1-800-555-1234",
    "020 7946 0958",
    "(020) 7946 0958",
    "06 12 34 56 78",
    "06.12.34.56.78",
    "0171 1234567",
    "030/1234567",
]
NOT_PII = [
    "It happened in 2023.",
    "From 1999 to 2024, and 1999-2024.",
    "pi is 3.14, or 3.14159; e is 2.71828.",
    "1,000,000 and 1 000 000 and 123456 and $1.234.567 and £1,234.56",
    "on 2024-01-15, 15.01.2024 and 01/15/2024; 05.01.2024 12 people came",
    "at 2024-01-15T10:30:00+05:30 or 12:30",
    "v1.2.3, Python 3.11.4, Windows 10.0.19041.1234, version 2.100.200.3000",
    "hosts 192.168.1.100 and 10.0.0.1",
    "ISBN 978-3-16-148410-0, uuid 123e4567-e89b-12d3-a456-426614174000, 0x7fff5fbff8a8",
    "score +12, from -12.5 to +30.2, 1.5e-10, ratio 100:200, pages 123-456",
    "@mention, a@b and user@localhost",
    "weights 0.1 0.2 0.3 0.4 and article 10 000 312",
]


@pytest.mark.parametrize("email", EMAILS)
def test_scrub_emails(email: str) -> None:
    assert scrub_text(f"Write to {email}.") == "Write to [EMAIL]."
    assert scrub_text(f"({email})") == "([EMAIL])"


@pytest.mark.parametrize("phone", PHONES)
def test_scrub_phones(phone: str) -> None:
    assert scrub_text(f"Call {phone} today") == "Call [PHONE] today"
    assert scrub_text(f"tel:{phone}.") == "tel:[PHONE]."


@pytest.mark.parametrize("text", NOT_PII)
def test_scrub_leaves_numbers_dates_and_versions(text: str) -> None:
    assert scrub_text(text) == text


def test_scrub_mixed_text_and_custom_tokens() -> None:
    text = "Reach me at jane@corp.io or +44 20 7946 0958 (not before 2024-01-15, build 1.2.3)."
    assert scrub_text(text) == "Reach me at [EMAIL] or [PHONE] (not before 2024-01-15, build 1.2.3)."
    assert scrub_text(text, email_token="<e>", phone_token="<p>").startswith("Reach me at <e> or <p> ")


def test_scrub_chat_messages() -> None:
    messages = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "My mail is x@y.com", "name": "x"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Ring 555-123-4567"}, {"type": "image", "url": "u"}],
        },
    ]
    out = scrub_text(messages)
    assert out == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "My mail is [EMAIL]", "name": "x"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Ring [PHONE]"}, {"type": "image", "url": "u"}],
        },
    ]
    assert messages[1]["content"] == "My mail is x@y.com"  # new objects; the input is untouched
    with pytest.raises(TypeError, match="string or a list of messages"):
        scrub_text(42)  # type: ignore[arg-type]


def _records() -> list:
    pii = "mail a@b.org or call +1 555 123 4567"
    chat = [{"role": "user", "content": f"Q? {pii}"}]
    common = {"rater_id": "alice@example.com", "item_id": "i1", "prompt": f"Prompt, {pii}"}
    return [
        Rating(**common, response_id="x", response=f"R {pii}", value=3),
        Ranking(
            **{**common, "prompt": chat},
            responses=(RankedResponse("x", f"one {pii}"), RankedResponse("y", "two")),
            ranks=(1, 2),
        ),
        Comparison(
            **{**common, "rater_id": "bob"}, a_id="x", a=f"A {pii}", b_id="y", b=f"B {pii}", winner="a"
        ),
        Edit(**common, response_id="x", original=f"O {pii}", edited=f"E {pii}", reason=f"why {pii}"),
        Edit(**common, response_id="x", original="O", edited="E"),
        Demonstration(**common, response=f"D {pii}", metadata={"note": pii}),
    ]


def test_scrub_records_of_every_kind() -> None:
    records = _records()
    out = scrub_records(records)
    clean = "mail [EMAIL] or call [PHONE]"
    rating, ranking, comparison, edit, bare_edit, demo = out
    assert rating.prompt == f"Prompt, {clean}" and rating.response == f"R {clean}"
    assert ranking.prompt == [{"role": "user", "content": f"Q? {clean}"}]
    assert [(r.id, r.text) for r in ranking.responses] == [("x", f"one {clean}"), ("y", "two")]
    assert (comparison.a, comparison.b) == (f"A {clean}", f"B {clean}")
    assert (edit.original, edit.edited, edit.reason) == (f"O {clean}", f"E {clean}", f"why {clean}")
    assert bare_edit.reason is None
    assert demo.response == f"D {clean}"
    # Ids, values and metadata are kept; the inputs are untouched.
    assert [r.rater_id for r in out] == [r.rater_id for r in records]
    assert demo.metadata == records[-1].metadata and rating.value == 3 and ranking.ranks == (1, 2)
    assert records[0].response.startswith("R mail a@b.org")
    for record in out:
        assert "a@b.org" not in str(to_dict(record).get("prompt")) and "123 4567" not in str(
            to_dict(record).get("prompt")
        )

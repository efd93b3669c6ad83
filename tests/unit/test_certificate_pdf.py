"""The tax credit certificate PDF: what it says, and that it always renders the same."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from pypdf import PdfReader

from services.taxcredit.adapters.certificate_pdf import render_certificate

EVENT_HASH = "3f9a1c2b7d" + "0123456789abcdef" * 3 + "a1b2c3"
assert len(EVENT_HASH) == 64


def certificate(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "number": "TC-2026-3F9A1C2B7D",
        "application_id": "8d0c6f5e-2b1a-4c3d-9e8f-7a6b5c4d3e2f",
        "firm_id": "123-45-67890",
        "firm_name": "Cellgen Bio Co., Ltd.",
        "tax_year": 2026,
        "programme": "strategic_investment",
        "amount": 250_000_000,
        "original_amount": 250_000_000,
        "status": "valid",
        "issued_on": "2026-03-02",
        "table_version": "kr-strategic-2026.1",
        "event_hash": EVENT_HASH,
        "verify_url": "https://taxcredit.example.go.kr/verify/TC-2026-3F9A1C2B7D",
    }
    fields.update(changes)
    return fields


def text_of(data: bytes) -> str:
    reader = PdfReader(io.BytesIO(data))
    assert len(reader.pages) == 1
    return reader.pages[0].extract_text()


def test_certificate_shows_what_the_tax_authority_needs() -> None:
    data = render_certificate(certificate())
    assert data.startswith(b"%PDF")
    text = text_of(data)
    assert "Tax credit certificate" in text
    assert "TC-2026-3F9A1C2B7D" in text
    assert "123-45-67890" in text
    assert "Cellgen Bio Co., Ltd." in text
    assert "2026" in text
    assert "National strategic technology investment" in text
    assert "250,000,000" in text and "250000000" in text
    assert "2026-03-02" in text
    assert "kr-strategic-2026.1" in text
    assert "/v1/applications/8d0c6f5e-2b1a-4c3d-9e8f-7a6b5c4d3e2f/events" in text
    assert "RFC 8785" in text
    assert "https://taxcredit.example.go.kr/verify/TC-2026-3F9A1C2B7D" in text
    assert EVENT_HASH in re.sub(r"\s+", "", text)  # split over lines on the page
    assert "Original amount" not in text
    assert "REVOKED" not in text and "REDUCED" not in text


def test_revoked_certificate_says_so() -> None:
    text = text_of(
        render_certificate(certificate(status="revoked", amount=0, original_amount=250_000_000))
    )
    assert "REVOKED" in text
    assert "Original amount" in text
    assert "0 KRW (0 won)" in text


def test_reduced_certificate_shows_both_amounts() -> None:
    text = text_of(render_certificate(certificate(status="reduced", amount=180_000_000)))
    assert "REDUCED" in text
    assert "180,000,000 KRW (180000000 won)" in text
    assert "250,000,000 KRW (250000000 won)" in text


def test_programme_titles_are_readable() -> None:
    assert "M&A technology value" in text_of(
        render_certificate(certificate(programme="mna_technology_value"))
    )
    assert "Corporate venture investment" in text_of(
        render_certificate(certificate(programme="corporate_venture_investment"))
    )


def test_text_outside_latin_1_does_not_crash() -> None:
    data = render_certificate(
        certificate(firm_name="주식회사 셀젠바이오 – “Cellgen” ₩", verify_url="")
    )
    text = text_of(data)
    assert "Cellgen" in text
    assert "?" in text
    assert "Verify online" not in text


def test_the_same_certificate_renders_to_the_same_bytes() -> None:
    first = render_certificate(certificate(firm_name="주식회사 셀젠바이오"))
    assert first == render_certificate(certificate(firm_name="주식회사 셀젠바이오"))
    assert first != render_certificate(certificate(firm_name="주식회사 셀젠바이오", amount=1))


def test_metadata_comes_from_the_certificate() -> None:
    reader = PdfReader(io.BytesIO(render_certificate(certificate())))
    metadata = reader.metadata
    assert metadata is not None
    assert metadata.title == "Tax credit certificate TC-2026-3F9A1C2B7D"
    assert metadata.creation_date is not None
    assert metadata.creation_date.date().isoformat() == "2026-03-02"


def test_fractional_won_is_refused() -> None:
    with pytest.raises(ValueError, match="whole won"):
        render_certificate(certificate(amount="1.5"))

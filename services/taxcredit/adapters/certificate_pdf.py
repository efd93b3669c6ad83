"""The tax credit certificate as a one-page A4 PDF a firm can file with the tax authority.

Rendered with fpdf2's built-in core fonts only (Helvetica, and Courier for the hash),
so nothing is embedded and every text must be Latin-1: characters outside it (a Korean
firm name, say) are folded where Unicode offers a Latin form and replaced by ``?``
otherwise. The same certificate always renders to the same bytes: the creation date is
the issue date, and fpdf2's ``/ID`` is an MD5 of the document's own bytes and creation
date, not a random value.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from fpdf import FPDF
from fpdf.enums import XPos, YPos

PROGRAMME_TITLES: dict[str, str] = {
    "strategic_investment": "National strategic technology investment",
    "mna_technology_value": "M&A technology value",
    "corporate_venture_investment": "Corporate venture investment",
}

_STATUS_NOTES: dict[str, str] = {
    "valid": "This certificate is valid for the credit amount stated above.",
    "reduced": (
        "This certificate was reduced after it was issued: the tax authority honours the "
        "credit amount stated above, not the original amount."
    ),
    "revoked": (
        "This certificate has been revoked (clawback): it no longer supports the original "
        "credit, and the tax authority honours only the credit amount stated above."
    ),
}

# typographic characters Latin-1 lacks, written the way a typewriter would
_FOLD = str.maketrans(
    {
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2026": "...",
        "\u20a9": "KRW ",
        "\u20ac": "EUR ",
        "\u2022": "-",
    }
)

_MARGIN = 20.0
_LABEL_WIDTH = 52.0
_LINE = 6.5
_MAX_FIELD = 100


def render_certificate(certificate: Mapping[str, Any]) -> bytes:
    """The certificate as PDF bytes: one A4 page, deterministic for the same certificate."""
    number = _text(certificate["number"], limit=48)
    application_id = _text(certificate["application_id"], limit=64)
    status = _text(certificate["status"], limit=20).lower()
    issued_on = _issue_date(certificate["issued_on"])
    amount = _whole_won(certificate["amount"])
    original_amount = _whole_won(certificate["original_amount"])
    programme = str(certificate["programme"])
    event_hash = str(certificate["event_hash"]).strip().lower()

    pdf = FPDF(orientation="portrait", unit="mm", format="A4")
    pdf.set_margins(_MARGIN, _MARGIN, _MARGIN)
    pdf.set_auto_page_break(False)
    pdf.set_title(f"Tax credit certificate {number}")
    pdf.set_subject(f"Tax credit certificate for tax year {_text(certificate['tax_year'])}")
    pdf.set_author("taxcredit service, advanced-industry cluster incentives")
    pdf.set_creator("cluster-incentives taxcredit")
    pdf.set_lang("en")
    pdf.set_creation_date(datetime(issued_on.year, issued_on.month, issued_on.day, tzinfo=UTC))
    pdf.add_page()
    width = pdf.epw

    pdf.set_font("Helvetica", "", 9)
    pdf.set_text_color(90, 90, 90)
    pdf.cell(width, 5, "Advanced-industry cluster incentives", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_text_color(0, 0, 0)
    pdf.set_font("Helvetica", "B", 22)
    pdf.cell(width, 13, "Tax credit certificate", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "", 12)
    pdf.multi_cell(
        width, 7, f"Certificate no. {number}", align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT
    )

    if status != "valid":
        pdf.ln(3)
        pdf.set_font("Helvetica", "B", 16)
        pdf.set_text_color(180, 0, 0)
        pdf.cell(
            width,
            10,
            status.upper() or "UNKNOWN STATUS",
            border=1,
            align="C",
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )
        pdf.set_text_color(0, 0, 0)

    pdf.ln(4)
    pdf.set_font("Helvetica", "", 10)
    pdf.multi_cell(
        width,
        5,
        "This certifies that the firm named below is granted the tax credit stated, computed "
        "with the rate table in force for the tax year and certified by an officer.",
        align="L",
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    pdf.ln(3)
    pdf.set_draw_color(160, 160, 160)
    pdf.line(_MARGIN, pdf.get_y(), _MARGIN + width, pdf.get_y())
    pdf.ln(3)

    rows: list[tuple[str, str]] = [
        ("Certificate number", number),
        ("Firm", _text(certificate["firm_name"])),
        ("Business registration no.", _text(certificate["firm_id"], limit=40)),
        ("Tax year", _text(certificate["tax_year"])),
        ("Programme", _programme(programme)),
        ("Credit amount", _won(amount)),
    ]
    if original_amount != amount:
        rows.append(("Original amount", _won(original_amount)))
    rows += [
        ("Status", status.upper()),
        ("Issued on", issued_on.isoformat()),
        ("Rate table version", _text(certificate["table_version"], limit=40)),
        ("Application", application_id),
    ]
    for label, value in rows:
        _row(pdf, label, value, bold=label == "Credit amount")

    note = _STATUS_NOTES.get(status)
    if note:
        pdf.ln(2)
        pdf.set_font("Helvetica", "I", 10)
        pdf.multi_cell(width, 5, note, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    pdf.ln(4)
    pdf.line(_MARGIN, pdf.get_y(), _MARGIN + width, pdf.get_y())
    pdf.ln(3)
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(width, 7, "Verification", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "", 10)
    pdf.cell(
        width,
        5,
        "SHA-256 hash of the event that issued this certificate:",
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    pdf.set_font("Courier", "B", 11)
    for line in _hash_lines(event_hash):
        pdf.cell(width, 5.5, line, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(2)
    pdf.set_font("Helvetica", "", 10)
    pdf.multi_cell(
        width,
        5,
        f"To check it, fetch the issuing event from GET /v1/applications/{application_id}/events "
        "and recompute its hash: sha256 of the RFC 8785 canonical JSON of the event's envelope "
        'without its "hash" member must equal the hash above.',
        align="L",
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    verify_url = _text(certificate.get("verify_url") or "", limit=120)
    if verify_url:
        pdf.ln(1)
        link = verify_url if verify_url.startswith(("https://", "http://")) else ""
        pdf.multi_cell(
            width,
            5,
            f"Verify online: {verify_url}",
            link=link,
            align="L",
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )

    pdf.set_y(max(pdf.get_y() + 4, pdf.h - _MARGIN - 10))
    pdf.set_font("Helvetica", "", 8)
    pdf.set_text_color(90, 90, 90)
    pdf.multi_cell(
        width,
        4,
        "Issued by the taxcredit service of the advanced-industry cluster incentives system. "
        "The service's hash-chained event log is authoritative; this page renders it.",
        align="L",
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    return bytes(pdf.output())


def _row(pdf: FPDF, label: str, value: str, *, bold: bool = False) -> None:
    top = pdf.get_y()
    pdf.set_font("Helvetica", "", 10)
    pdf.set_text_color(90, 90, 90)
    pdf.cell(_LABEL_WIDTH, _LINE, label)
    pdf.set_text_color(0, 0, 0)
    pdf.set_font("Helvetica", "B" if bold else "", 12 if bold else 11)
    pdf.set_xy(_MARGIN + _LABEL_WIDTH, top)
    pdf.multi_cell(
        pdf.epw - _LABEL_WIDTH, _LINE, value, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT
    )


def _text(value: object, limit: int = _MAX_FIELD) -> str:
    """``value`` as one line of Latin-1 text the core fonts can draw (never raises)."""
    text = "".join(c if ord(c) < 256 else unicodedata.normalize("NFKC", c) for c in str(value))
    text = text.translate(_FOLD)
    text = "".join(" " if unicodedata.category(c).startswith(("Z", "C")) else c for c in text)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text.encode("latin-1", "replace").decode("latin-1")


def _won(amount: int) -> str:
    """``250000000`` -> ``250,000,000 KRW (250000000 won)``."""
    return f"{amount:,} KRW ({amount} won)"


def _whole_won(value: Any) -> int:
    """An amount of the certificate as integer won (an int, or a whole Decimal or string)."""
    if isinstance(value, bool):
        raise TypeError("an amount is an integer number of won")
    amount = Decimal(str(value))
    if amount != amount.to_integral_value():
        raise ValueError(f"an amount is whole won, not {value!r}")
    return int(amount)


def _programme(programme: str) -> str:
    """The programme's readable title and its code; the code alone for an unknown one."""
    title = PROGRAMME_TITLES.get(programme)
    return f"{title} ({programme})" if title else _text(programme, limit=60)


def _issue_date(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value).strip()[:10])


def _hash_lines(event_hash: str) -> list[str]:
    """The hash in lines of 32 characters (two for a sha256 hex digest)."""
    text = _text(event_hash, limit=64) or "(none)"
    return [text[start : start + 32] for start in range(0, len(text), 32)]

"""Catalogues and tables as data files: a service's packaged default, or a file named in settings."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any


def load_document(package: str, filename: str, override: Path | None = None) -> dict[str, Any]:
    """The JSON document ``override`` if given, else ``filename`` packaged in ``package``."""
    if override is not None:
        text = Path(override).read_text(encoding="utf-8")
    else:
        text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    document = json.loads(text)
    if not isinstance(document, dict):
        raise ValueError(f"{override or filename}: a catalogue is a JSON object")
    return document


def strategic_technologies() -> dict[str, Any]:
    """The national strategic technology catalogue every programme shares."""
    return load_document("shared.catalogue", "strategic-technologies.json")


def catalogue_for(
    settings_path: Path | None, package: str, filename: str, given: dict[str, Any] | None
) -> dict[str, Any]:
    """The catalogue a service runs with: ``given`` (tests), else the settings' file, else
    the packaged default."""
    return given if given is not None else load_document(package, filename, settings_path)

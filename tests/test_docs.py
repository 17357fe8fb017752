"""Documentation that operators rely on stays in step with the code."""

from __future__ import annotations

import re
from pathlib import Path

from paymux.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"`(PAYMUX_[A-Z_]+)`", (ROOT / "docs" / "configuration.md").read_text()))
    expected = {f"PAYMUX_{name.upper()}" for name in Settings.model_fields}
    assert expected <= documented, f"undocumented settings: {sorted(expected - documented)}"


def test_readme_links_point_at_files_that_exist() -> None:
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"

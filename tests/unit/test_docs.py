"""The docs stay true: every setting, close code and error code is documented."""

from __future__ import annotations

from pathlib import Path

import msgspec

from config.settings import UNPREFIXED, Settings
from gateway.protocol import CloseCode, ErrorCode

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
# The reference docs: README plus every page under docs/.
DOCS = README + "".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))
ENV_EXAMPLE = (ROOT / "config" / "lectern.env.example").read_text()


def _env_names() -> list[str]:
    names = []
    for field in msgspec.structs.fields(Settings):
        upper = field.name.upper()
        names.append(upper if upper in UNPREFIXED else f"LECTERN_{upper}")
    return names


def test_every_setting_is_in_readme_and_example() -> None:
    """docs/configuration.md and config/lectern.env.example list every setting."""
    missing_readme = [n for n in _env_names() if f"`{n}`" not in DOCS]
    missing_example = [n for n in _env_names() if f"{n}=" not in ENV_EXAMPLE]
    assert not missing_readme, f"docs lack {missing_readme}"
    assert not missing_example, f"config/lectern.env.example lacks {missing_example}"


def test_every_close_and_error_code_is_in_readme() -> None:
    """The close-code table and the error-code list match the enums."""
    assert [c for c in CloseCode if f"| {int(c)}" not in DOCS and f" {int(c)} " not in DOCS] == []
    assert [e for e in ErrorCode if f"`{e.value}`" not in DOCS] == []


def test_readme_gives_the_two_commands() -> None:
    assert "make run" in README and "make test" in README

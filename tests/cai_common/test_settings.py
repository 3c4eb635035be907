"""Settings: one typed object reads the environment, and the README's table lists exactly its variables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cai_common.settings import Settings, settings, variables

README = Path(__file__).parents[2] / "README.md"
NOT_CAIS = {"PREFECT_API_URL", "CAI_TEST_DATABASE_URL"}  # Prefect's own, and the tests'


def _readme_table() -> dict[str, str]:
    """variable -> default column of the README's Environment table."""
    text = README.read_text()
    table = text[text.index("### Environment"):text.index("### Config store")]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            for name in re.findall(r"`([A-Z_]+)`", cells[0]):
                rows[name] = cells[2]
    return rows


def test_the_readme_lists_every_setting_with_its_default() -> None:
    table = _readme_table()
    assert set(variables()) | NOT_CAIS == set(table)
    for field in Settings.model_fields.values():
        if isinstance(field.default, float):
            assert table[str(field.validation_alias)] == f"{field.default:g}", field.validation_alias


def test_settings_come_from_the_environment_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAI_HEARTBEAT_SECONDS", "2.5")
    monkeypatch.setenv("MINIO_SECRET_KEY", "minio-secret-77")
    current = settings()
    assert current.heartbeat_seconds == 2.5
    assert "minio-secret-77" not in repr(current)
    monkeypatch.setenv("CAI_HEARTBEAT_SECONDS", "soon")
    with pytest.raises(ValueError, match="CAI_HEARTBEAT_SECONDS"):
        settings()

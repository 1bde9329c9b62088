"""`mailconnect db` through the command line: an unusable database exits 1, without a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailconnect.cli import app

runner = CliRunner()


@pytest.fixture
def text_file_database(tmp_path: Path) -> dict[str, str]:
    text = tmp_path / "notes.txt"
    text.write_text("these are notes, not a database\n" * 100, "utf-8")
    return {
        "MAILCONNECT_DATA_DIR": str(tmp_path / "data"),
        "MAILCONNECT_DATABASE_URL": f"sqlite:///{text}",
    }


@pytest.mark.parametrize("command", ["current", "upgrade"])
def test_a_file_that_is_not_a_database_exits_1_with_the_reason(
    text_file_database: dict[str, str], command: str
) -> None:
    result = runner.invoke(app, ["db", command], env=text_file_database)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Cannot use the database" in result.output
    assert "not a database" in result.output
    assert "Traceback" not in result.output


def test_a_file_that_is_not_a_database_in_json(text_file_database: dict[str, str]) -> None:
    result = runner.invoke(app, ["db", "current", "--json"], env=text_file_database)
    assert result.exit_code == 1, result.output
    error = json.loads(result.stdout)["error"]
    assert error["problem"] == "file is not a database"
    assert error["database"].endswith("notes.txt")

"""Read-only commands never create a store (issue 16): a mistyped path is an error naming it, exit 2, no file
or folder made; `medcot build` with a missing or empty store leaves an existing release byte-for-byte as it was."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dataset_builder.build import build_release, file_hashes
from dataset_builder.synthetic import SyntheticSpec, make_store
from medcot.cli import main
from medcot.config import BuildConfig
from medcot.store import Store, StoreMissingError


def _run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.parametrize("command", [["status"], ["review", "stats"], ["review", "export-audit", "--out", "a.jsonl"]])
def test_read_only_commands_refuse_a_missing_store_and_create_nothing(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "no-such-folder" / "stroe.db"
    result = _run(*command, "--store", str(missing))
    assert result.exit_code == 2
    assert str(missing) in result.output and "does not exist" in result.output
    assert not missing.exists() and not missing.parent.exists()
    assert not (tmp_path / "a.jsonl").exists()


def test_a_file_that_is_not_a_medcot_store_is_refused_unchanged(tmp_path):
    other = tmp_path / "other.db"
    Store(str(tmp_path / "scratch.db"))  # a real store elsewhere, so the folder is not empty
    other.write_bytes(b"")
    with pytest.raises(StoreMissingError, match="not a medcot store"):
        Store(str(other), create=False)
    assert other.read_bytes() == b""
    assert _run("status", "--store", str(other)).exit_code == 2


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("readonly-release")
    store = make_store(str(tmp / "store.db"), SyntheticSpec(items=40, seed=3))
    out = build_release(store, BuildConfig(), tmp / "release").release_dir
    store.close()
    return out


def test_build_with_a_missing_store_leaves_the_release_byte_identical(tmp_path, release):
    before = file_hashes(release)
    missing = tmp_path / "typo.db"
    result = _run("build", "--store", str(missing), "--out", str(release))
    assert result.exit_code == 2 and str(missing) in result.output
    assert file_hashes(release) == before and not missing.exists()


def test_build_refuses_an_empty_store_unless_allowed(tmp_path, release):
    before = file_hashes(release)
    empty = tmp_path / "empty.db"
    Store(str(empty)).close()  # a real, empty medcot store
    result = _run("build", "--store", str(empty), "--out", str(release))
    assert result.exit_code == 2 and "holds no items" in result.output and "--allow-empty" in result.output
    assert file_hashes(release) == before
    allowed = _run("build", "--store", str(empty), "--out", str(tmp_path / "empty-release"), "--allow-empty")
    assert allowed.exit_code == 0, allowed.output
    assert (tmp_path / "empty-release" / "README.md").is_file()


@pytest.mark.parametrize("url, expected", [
    ("mysql://u@127.0.0.1:1/db", "install its driver"),  # the MySQL driver is not installed here
    ("nosuchdb://x/y", "cannot use this database URL"),
    ("postgresql://u:hunter2@127.0.0.1:1/db", "cannot reach the store postgresql+psycopg://u:***@127.0.0.1:1/db"),
])
def test_unusable_database_urls_are_one_clear_line_without_the_password(url, expected):
    result = CliRunner().invoke(main, ["status", "--store", url])
    assert result.exit_code == 2
    assert expected in result.output and "hunter2" not in result.output
    assert "Traceback" not in result.output

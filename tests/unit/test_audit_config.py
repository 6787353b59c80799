"""Config drift: command and env against the release; env values never shown (law 5)."""

from __future__ import annotations

from pathlib import Path

from corral.audit.config import compare_command, compare_env
from corral.audit.keys import home_key, keyed_hash


def test_same_command_and_env_are_clean() -> None:
    assert compare_command(["python3", "/app/s.py"], ["python3", "/app/s.py"]) == []
    assert compare_env({"A": "1"}, {"A": "1"}, key=b"k") == []


def test_a_changed_command_is_shown() -> None:
    (finding,) = compare_command(["python3", "/app/s.py"], ["python3", "/tmp/evil.py"])
    assert finding.render() == "command: runs `python3 /tmp/evil.py` ≠ release `python3 /app/s.py`"


def test_env_drift_is_named_with_keyed_hashes_never_values() -> None:
    expected = {"DB_PASSWORD": "s3cret-value", "GREETING": "hello", "GONE": "x"}
    actual = {"DB_PASSWORD": "stolen-value", "GREETING": "hello", "LD_PRELOAD": "/tmp/evil.so"}
    found = compare_env(expected, actual, key=b"key")
    text = " ".join(f.render() for f in found)
    assert [f.path for f in found] == ["env.DB_PASSWORD", "env.GONE", "env.LD_PRELOAD"]
    for value in ("s3cret-value", "stolen-value", "/tmp/evil.so"):
        assert value not in text
    assert keyed_hash(b"key", "DB_PASSWORD", "stolen-value") in text
    assert keyed_hash(b"key", "DB_PASSWORD", "s3cret-value") in text


def test_secrets_are_checked_for_presence_only() -> None:
    assert compare_env({"TOKEN": "?"}, {"TOKEN": "real"}, key=b"k", presence_only={"TOKEN"}) == []
    (missing,) = compare_env({"TOKEN": "?"}, {}, key=b"k", presence_only={"TOKEN"})
    assert missing.render() == "env: TOKEN removed (release sets it)"


def test_the_home_key_is_private_and_stable(tmp_path: Path) -> None:
    key = home_key(tmp_path)
    assert key == home_key(tmp_path) and len(key) == 32
    assert (tmp_path / "audit" / "key").stat().st_mode & 0o777 == 0o600
    assert keyed_hash(key, "A", "1") != keyed_hash(home_key(tmp_path / "other"), "A", "1")

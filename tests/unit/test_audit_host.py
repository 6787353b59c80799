"""Host drift: a baseline of watched paths, then added / removed / changed, and after boot."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from corral.audit.host import HostAuditor, boot_time
from corral.errors import DriftFound, UsageError


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    watched = tmp_path / "etc"
    (watched / "conf.d").mkdir(parents=True)
    (watched / "app.conf").write_text("port = 80\n")
    (watched / "conf.d" / "extra.conf").write_text("x = 1\n")
    (watched / "link").symlink_to("app.conf")
    return watched


def test_an_unchanged_host_is_clean(tmp_path: Path, etc: Path) -> None:
    auditor = HostAuditor(tmp_path / "home")
    baseline = auditor.init([str(etc)])
    assert len(baseline.files) == 5
    assert auditor.check().changes == ()


def test_content_mode_added_removed_and_target_are_reported(tmp_path: Path, etc: Path) -> None:
    auditor = HostAuditor(tmp_path / "home")
    auditor.init([str(etc)])
    (etc / "app.conf").write_text("port = 81\n")
    os.chmod(etc / "conf.d" / "extra.conf", 0o600)
    (etc / "new.conf").write_text("")
    (etc / "link").unlink()
    (etc / "link").symlink_to("/etc/passwd")
    report = HostAuditor(tmp_path / "home").check(booted=0.0)
    by_path = {c.path: c for c in report.changes}
    assert by_path[str(etc / "app.conf")].what == ("content",)
    assert by_path[str(etc / "conf.d" / "extra.conf")].what == ("mode",)
    assert "mode 0644 → 0600" in by_path[str(etc / "conf.d" / "extra.conf")].detail
    assert by_path[str(etc / "new.conf")].kind == "added"
    assert by_path[str(etc / "link")].what == ("target",)
    assert all(c.after_boot for c in report.changes)
    (etc / "new.conf").unlink()
    (etc / "conf.d" / "extra.conf").unlink()
    removed = [c for c in auditor.check().changes if c.kind == "removed"]
    assert [c.path for c in removed] == [str(etc / "conf.d" / "extra.conf")]


def test_owner_change(tmp_path: Path, etc: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("chown needs root")
    auditor = HostAuditor(tmp_path / "home")
    auditor.init([str(etc)])
    os.chown(etc / "app.conf", 4321, 4321)
    (change,) = auditor.check().changes
    assert change.what == ("owner",) and "→ 4321:4321" in change.detail


def test_changed_after_boot_is_flagged_by_ctime_against_btime(tmp_path: Path, etc: Path) -> None:
    auditor = HostAuditor(tmp_path / "home")
    auditor.init([str(etc)])
    (etc / "app.conf").write_text("changed\n")
    (before,) = auditor.check(booted=time.time() + 3600).changes
    (after,) = auditor.check(booted=time.time() - 3600).changes
    assert not before.after_boot and after.after_boot
    assert after.render().endswith("(after boot)")


def test_boot_time_is_read_from_proc_stat(tmp_path: Path) -> None:
    assert 0 < boot_time() <= time.time()
    fake = tmp_path / "stat"
    fake.write_text("cpu 1 2 3\nbtime 1700000000\n")
    assert boot_time(fake) == 1700000000.0


def test_an_edited_baseline_is_refused_as_drift(tmp_path: Path, etc: Path) -> None:
    auditor = HostAuditor(tmp_path / "home")
    auditor.init([str(etc)])
    text = auditor.baseline_path.read_text()
    auditor.baseline_path.write_text(text.replace("app.conf", "app.conX"))
    with pytest.raises(DriftFound, match="was changed since corral wrote it"):
        auditor.check()


def test_no_baseline_or_missing_paths_are_usage_errors(tmp_path: Path) -> None:
    auditor = HostAuditor(tmp_path / "home")
    with pytest.raises(UsageError, match="no host baseline"):
        auditor.check()
    with pytest.raises(UsageError, match="does not exist"):
        auditor.init([str(tmp_path / "nope")])

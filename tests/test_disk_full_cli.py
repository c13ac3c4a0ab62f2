"""A full disk anywhere (not only while writing feature arrays) is one line and exit 2."""

from __future__ import annotations

import errno

import pytest

import capfuse.cli as cli


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_one_line_naming_the_file(monkeypatch, caplog, code):
    def full(args):
        raise OSError(code, "No space left on device", "runs/demo/fusion/fold0/best.safetensors")

    monkeypatch.setattr(cli, "_dispatch", full)
    assert cli.main(["folds", "--data", "data/demo"]) == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "best.safetensors" in errors[0].getMessage()
    assert "run the same command again" in errors[0].getMessage() and not errors[0].exc_info


def test_another_os_error_is_not_disguised_as_a_full_disk(monkeypatch):
    def denied(args):
        raise PermissionError(errno.EACCES, "Permission denied", "runs/demo")

    monkeypatch.setattr(cli, "_dispatch", denied)
    with pytest.raises(PermissionError):
        cli.main(["folds", "--data", "data/demo"])

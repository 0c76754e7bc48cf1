"""Output errors surface clearly and never damage the previous file."""

import errno
import os

import pytest

from mcl.io import OutputError, write_json


def test_a_full_disk_names_the_file_and_keeps_the_old_version(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    write_json(target, {"completed_tasks": 1})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError, match="could not write .*results.json: No space left"):
        write_json(target, {"completed_tasks": 2})
    assert target.read_text().strip().endswith("}") and '"completed_tasks": 1' in \
        target.read_text()
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_an_unwritable_place_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match="could not write .*file/results.json"):
        write_json(blocker / "results.json", {})

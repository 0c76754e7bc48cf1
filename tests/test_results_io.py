"""What a run leaves behind, unit by unit: the fingerprint, task-checkpoint retention, the stored
predictions and the report's changed-answers view."""

import json

import pytest

from mcl import results as results_io
from mcl.report.changes import changed_answers


def test_fingerprint_leaves_out_run_only_settings_and_names_what_differs(tmp_path):
    config = {"seed": 0, "resume": True, "method": {"lr": 1e-4, "name": "lora"},
              "trainer": {"progress_bar": True, "precision": "32-true"},
              "logger": {"csv": {"save_dir": "x"}}, "predictions": "all"}
    settings = results_io.fingerprint(config)
    assert settings == {"seed": 0, "method.lr": 1e-4, "method.name": "lora",
                        "trainer.precision": "32-true"}
    results_io.check_fingerprint(tmp_path, settings)  # no results.json yet: nothing to check
    (tmp_path / "results.json").write_text(json.dumps({"fingerprint": settings}))
    quieter = results_io.fingerprint({**config, "trainer": {"progress_bar": False,
                                                            "precision": "32-true"}})
    results_io.check_fingerprint(tmp_path, quieter)  # a run-only change resumes
    other = results_io.fingerprint({**config, "seed": 1, "method": {"lr": 1e-5, "name": "lora"}})
    with pytest.raises(results_io.RunDirectoryMismatch, match=r"2 differ: method\.lr: 0\.0001 "
                                                              r"there, 1e-05 now; seed: 0 there"):
        results_io.check_fingerprint(tmp_path, other)
    (tmp_path / "results.json").write_text(json.dumps({"tasks": ["a"]}))  # no fingerprint
    with pytest.raises(results_io.RunDirectoryMismatch, match="resume=false"):
        results_io.check_fingerprint(tmp_path, settings)


@pytest.mark.parametrize(("keep", "left"), [(1, [3]), (2, [2, 3]), (None, [0, 1, 2, 3])])
def test_task_checkpoints_keep_the_last_n(tmp_path, keep, left):
    for i in range(4):
        results_io.save_checkpoint(tmp_path, i, {"task": i}, keep=keep)
    assert sorted(int(p.stem[5:]) for p in (tmp_path / "checkpoints").glob("task_*.pt")) == left
    with pytest.raises(ValueError, match="keep_task_checkpoints"):
        results_io.save_checkpoint(tmp_path, 4, {}, keep=0)


def _record(i, prediction, reference, score):
    return {"id": i, "prediction": prediction, "references": reference, "score": score}


def test_changed_answers_lists_what_was_forgotten(tmp_path):
    # Task a: after training (row 1) ids 0, 1 right; at the end (row 2) id 1 wrong, id 2 right.
    rows = {(1, 0): [_record(0, "cat", "cat", 1.0), _record(1, "dog", "dog", 1.0),
                     _record(2, "x", "cow", 0.0)],
            (2, 0): [_record(0, "cat", "cat", 1.0), _record(1, "7", "dog", 0.0),
                     _record(2, "cow", "cow", 1.0)],
            (2, 1): [_record(0, "b", "b", 1.0)], (1, 1): []}
    for (i, j), records in rows.items():
        results_io.save_predictions(tmp_path, i, j, records)
    assert results_io.load_predictions(tmp_path, 2, 0) == rows[2, 0]  # read back as written
    (tmp_path / "results.json").write_text(json.dumps({"tasks": ["a", "b"],
                                                       "completed_tasks": 2}))
    table = changed_answers(tmp_path, examples=2)
    assert "| a | 3 | 1 | 1 | 1 | dog | 7 | dog |" in table  # forgotten id 1, learned id 2
    assert "| b | 1 | 0 | 0 |" in table
    results_io.drop_predictions(tmp_path, keep_rows={2})  # predictions=last
    kept_last = changed_answers(tmp_path)
    assert "No stored predictions for a (" in kept_last and "| b | 1 | 0 | 0 |" in kept_last


def test_git_state_says_when_the_code_differs_from_its_revision(tmp_path):
    import subprocess

    from mcl.results import git_state

    assert git_state(tmp_path) == {"git_revision": None, "git_dirty": None}  # no checkout
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True,  # noqa: E731
                                    capture_output=True)
    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    clean = git_state(tmp_path)
    assert len(clean["git_revision"]) == 40 and clean["git_dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")  # what ran is not the revision
    assert git_state(tmp_path) == {**clean, "git_dirty": True}
    (tmp_path / "notes.txt").write_text("untracked")  # untracked files are not the code
    git("checkout", "-q", "code.py")
    assert git_state(tmp_path)["git_dirty"] is False

"""Bring your own data: a folder of tasks or a local Hugging Face dataset, run with no Python;
a stream the tokenizer cannot read is refused before training; user errors in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mcl.data import toy_world
from mcl.data.folder import folder_stream, hf_stream

ROOT = Path(__file__).resolve().parents[1]
RUN = ["backbone=tiny_llava_micro", "logger=none", "trainer.progress_bar=false",
       "method.epochs=1"]
TASKS = ["capability_recognition", "capability_colour", "capability_counting"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m mcl.run` from `cwd` (a user's directory), importing this checkout's mcl."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "mcl.run", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=env)


def write_folder(root: Path, words=None, n_train: int = 24, n_test: int = 8) -> Path:
    """Three toy tasks as a user would lay them out: PNGs beside train.json (LLaVA
    conversations) and test.json (questions). `words` rewrites every prompt."""
    for t, task in enumerate(TASKS):
        folder = root / f"{t + 1}_{task}"
        (folder / "images").mkdir(parents=True)
        entries = {}
        for split, n in (("train", n_train), ("test", n_test)):
            entries[split] = []
            for i, s in enumerate(toy_world.generate(task, n, 0, split)):
                name = f"images/{split}_{i}.png"
                Image.fromarray(s.image).save(folder / name)
                prompt = words or s.prompt
                if split == "train":
                    entries[split].append({"id": str(i), "image": name, "conversations": [
                        {"from": "human", "value": f"<image>\n{prompt}"},
                        {"from": "gpt", "value": s.answer}]})
                else:
                    entries[split].append({"question_id": i, "image": name, "text": prompt,
                                           "answer": s.answer})
            (folder / f"{split}.json").write_text(json.dumps(entries[split]))
    return root


def test_a_folder_of_three_tasks_runs_end_to_end_with_no_python(tmp_path):
    data = write_folder(tmp_path / "my data")
    out = tmp_path / "out"
    result = _cli("stream=folder", f"stream.root={data}", "stream.name=mine", *RUN,
                  f"hydra.run.dir={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((out / "results.json").read_text())
    assert saved["tasks"] == [f"{t + 1}_{task}" for t, task in enumerate(TASKS)]
    matrix = np.array(saved["matrix"], dtype=float)
    assert matrix.shape == (4, 3) and not np.isnan(matrix).any()
    # The console went to run.log too.
    assert "stream mine: 3 tasks" in (out / "run.log").read_text()


def test_classification_folders_become_class_tasks(tmp_path):
    for task, classes in (("a", ["cat", "dog"]), ("b", ["owl"])):
        for split in ("train", "test"):
            for c in classes:
                (tmp_path / task / split / c).mkdir(parents=True)
                Image.new("RGB", (8, 8)).save(tmp_path / task / split / c / "0.png")
    stream = folder_stream("f", str(tmp_path))
    assert [t.meta["classes"] for t in stream.tasks] == [["cat", "dog"], ["owl"]]
    assert [s.answer for s in stream.tasks[0].test] == ["cat", "dog"]


def test_a_folder_without_the_layout_says_what_is_expected(tmp_path):
    (tmp_path / "t1").mkdir()
    with pytest.raises(FileNotFoundError, match=r"neither train.json nor train/"):
        folder_stream("f", str(tmp_path))


def test_a_local_hf_dataset_with_mapped_columns(tmp_path):
    """`load_dataset(<dir>)` of json files; columns renamed; tasks from a column."""
    rows = {"train": [], "test": []}
    for split in rows:
        for t, task in enumerate(TASKS[:2]):
            for i, s in enumerate(toy_world.generate(task, 4, 0, split)):
                name = f"{split}_{t}_{i}.png"
                Image.fromarray(s.image).save(tmp_path / name)
                rows[split].append({"picture": name, "q": s.prompt, "a": s.answer, "kind": task})
        (tmp_path / f"{split}.jsonl").write_text("\n".join(map(json.dumps, rows[split])))
    stream = hf_stream("h", str(tmp_path), columns={"image": "picture", "prompt": "q",
                                                    "answer": "a"}, task_column="kind",
                       load_args={"data_files": {"train": "train.jsonl", "test": "test.jsonl"}},
                       tasks=list(reversed(TASKS[:2])))
    assert stream.task_names == list(reversed(TASKS[:2]))
    first = stream.tasks[1].train[0]
    assert first.image == str(tmp_path / "train_0_0.png") and first.prompt == rows["train"][0]["q"]
    assert len(stream.tasks[0].test) == 4


def test_a_stream_of_unknown_words_is_refused_before_training(tmp_path):
    prompt = "Quelle est la forme de cet objet ?"
    data = write_folder(tmp_path / "data", words=prompt, n_train=4, n_test=2)
    # The share by hand: the prompt's words outside the toy vocabulary, over the prompt's words
    # and the (one-word, known) answer of every sample.
    known = set(toy_world.vocabulary())
    unknown = sum(w not in known for w in prompt.split())
    share = f"{unknown / (len(prompt.split()) + 1):.1%}"
    out = tmp_path / "out"
    result = _cli("stream=folder", f"stream.root={data}", *RUN, f"hydra.run.dir={out}",
                  cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{share} of the prompt and answer words" in result.stderr, result.stderr[-2000:]
    assert "'Quelle'" in result.stderr and "llava_1_5_7b" in result.stderr
    assert not (out / "checkpoints").exists()  # refused before any training
    assert share in json.loads((out / "failed.json").read_text())["error"]


def test_a_wrong_type_names_the_key_and_the_type_without_a_traceback(tmp_path):
    result = _cli("stream=toy_micro", *RUN, "method.lr=abc", f"hydra.run.dir={tmp_path}",
                  cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "method.lr: expected float, got 'abc'" in result.stderr
    debug = _cli("stream=toy_micro", *RUN, "method.lr=abc", "debug=true",
                 f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert "Traceback" in debug.stderr


@pytest.mark.parametrize("override, expected", [
    ("+method.learning_rate=0.1", "Did you mean method.lr?"),
    ("method=lorra", "Did you mean lora?"),
    ("method.epoch=2", "Did you mean method.epochs?"),
    ("sed=1", "Did you mean seed?"),
])
def test_a_typo_suggests_the_closest_name(tmp_path, override, expected):
    result = _cli("stream=toy_micro", *RUN, override, f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert expected in result.stderr, result.stderr[-2000:]


def test_a_key_of_swept_methods_only_gets_the_one_value_sweep_hint(tmp_path):
    """`-m experiment=a,b method.x=v`: Hydra checks method.x against the default method first;
    the message says how to pass it (a one-value sweep, checked per job)."""
    result = _cli("-m", "experiment=l2p_tiny,dualprompt_tiny", "backbone=tiny_clip_micro",
                  "stream=toy_class_micro", "method.prompt_init=pytorch_port",
                  f"hydra.sweep.dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "method.prompt_init=choice(pytorch_port)" in result.stderr, result.stderr[-2000:]

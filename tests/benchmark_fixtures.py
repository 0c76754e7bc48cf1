"""Few-sample copies of the benchmarks in their published file layouts.

CoIN: github.com/zackschen/CoIN (README "organize the instructions", scripts/LLaVA/Train and
Eval: `Instructions_Original/<Task>/train.json` as LLaVA conversations, `test.json`/`val.json` as
question files read by `ETrain/Eval/LLaVA/CoIN/model_vqa.py`, images under `cl_dataset/`).
COAST: mcl's documented layout (conf/stream/coast_*.yaml), the authors having published none.
UCIT: github.com/Ghy0501/HiDe-LLaVA README (`instructions/<Task>/...` with test_3000.json
question files and COCO-format `val_coco_type_3000.json` captions, images under `datasets/`).
MLLM-CL: github.com/bjzhb666/MLLM-CL README (`<Task>/{train,test}.json` beside `images/`; the
ability tasks' tests in `<Task>_test/`), with the fields its eval scripts read.
Images are generated, a different colour per sample.
CIFAR-100: the python pickles of cifar-100-python.tar.gz; CORe50: core50_128x128/s*/o*/*.png.
"""

from __future__ import annotations

import json
import pickle
import zlib
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from PIL import Image

CONF = Path(__file__).resolve().parents[1] / "conf"


def stream_tasks(stream: str) -> list[dict]:
    """The task entries of conf/stream/<stream>.yaml."""
    return OmegaConf.to_container(OmegaConf.load(CONF / "stream" / f"{stream}.yaml").tasks)


def write_image(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = np.random.default_rng(seed).integers(0, 256, 3, dtype=np.uint8)
    Image.fromarray(np.broadcast_to(colour, (size[1], size[0], 3)).copy()).save(path)


def _answer(task: dict, i: int) -> str:
    return {"option": "ABCD"[i % 4], "mllm_cl_finvis": "ABCD"[i % 4],
            "grounding": f"[0.{i}1, 0.{i}2, 0.{i}5, 0.{i}8]", "relaxed": str(10 + i),
            "classification": f"class {i}"}.get(task["match"], f"answer {i}")


def write_split(bench_dir: Path, image_root: Path, image_dir: str, task: dict, split: str,
                n: int) -> list[dict]:
    """Write `n` entries (and their images) of one split; returns the entries."""
    entries = []
    for i in range(n):
        rel = f"{image_dir}/{task['name']}_{split}_{i}.jpg"
        write_image(image_root / rel, seed=zlib.crc32(rel.encode()))
        question = f"<image>\nQuestion {i} about {task['name']}?"
        if split == "train":
            entries.append({"id": f"{task['name']}-{i}", "image": rel, "conversations": [
                {"from": "human", "value": question},
                {"from": "gpt", "value": _answer(task, i)}]})
        else:
            entry = {"question_id": f"{task['name']}-q{i}", "image": rel,
                     "text": question.replace("<image>\n", ""), "answer": _answer(task, i)}
            if task["match"] == "grounding":
                entry |= {"answer_bbox": _answer(task, i), "size": [40, 30]}
            if task["match"] == "vqa" and not task.get("answers"):  # ten human answers inline
                entry["answers"] = [entry["answer"]] * 7 + ["x"] * 3
            entries.append(entry)
    path = bench_dir / task[split]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries))
    return entries


def write_coin(data_root: Path, n_train: int = 3, n_test: int = 2) -> Path:
    """CoIN's eight tasks with a few samples each; TextVQA's official answers beside."""
    bench = data_root / "coin"
    for task in stream_tasks("coin"):
        write_split(bench, bench / "cl_dataset", "COCO2014/train2014", task, "train", n_train)
        tests = write_split(bench, bench / "cl_dataset", "COCO2014/val2014", task, "test",
                            n_test)
        if task.get("answers"):  # TextVQA_0.5.1_val.json: {"data": [{question_id, answers}]}
            data = [{"question_id": e["question_id"], "answers": [e["answer"]] * 7 + ["x"] * 3}
                    for e in tests]
            (bench / task["answers"]).parent.mkdir(parents=True, exist_ok=True)
            (bench / task["answers"]).write_text(json.dumps({"data": data}))
    return bench


def write_coast(data_root: Path, config: str, n_train: int = 3, n_test: int = 2) -> Path:
    """One COAST configuration with a few samples per task."""
    bench = data_root / "coast"
    for task in stream_tasks(f"coast_{config}"):
        spec = {**task, "train": f"{config}/{task['train']}", "test": f"{config}/{task['test']}"}
        for split, n in (("train", n_train), ("test", n_test)):
            write_split(bench, bench / "images", config, spec, split, n)
    return bench


def write_ucit(data_root: Path, n_train: int = 3, n_test: int = 2) -> Path:
    """UCIT's six tasks; the caption tasks' COCO files give each test image two captions, the
    first the question file's "answer"."""
    bench = data_root / "ucit"
    for task in stream_tasks("ucit"):
        folder = task["name"]
        write_split(bench, bench / "datasets", folder, task, "train", n_train)
        tests = write_split(bench, bench / "datasets", folder, task, "test", n_test)
        if task.get("captions"):
            coco = {"images": [{"id": k} for k in range(1, len(tests) + 1)],
                    "annotations": [
                        {"image_id": k, "id": 2 * k + j, "caption": caption}
                        for k, e in enumerate(tests, start=1)
                        for j, caption in enumerate([e["answer"], f"another caption {k}"])]}
            (bench / task["captions"]).write_text(json.dumps(coco))
    return bench


def write_mllm_cl(data_root: Path, config: str, n_train: int = 3, n_test: int = 2) -> Path:
    """One MLLM-CL setting ("domain" or "ability") with the fields its scorers read: OCRBench's
    answer lists and answer_type, CV-Bench's type and task, Sci's source-prefixed image names
    (test 0 from AI2D, the others MapQA, test 1 a "Which states" question)."""
    bench = data_root / "mllm_cl"
    for task in stream_tasks(f"mllm_cl_{config}"):
        for split, n in (("train", n_train), ("test", n_test)):
            entries = write_split(bench, bench / task[f"{split}_images"], "images", task, split,
                                  n)
            if split == "train":
                continue
            for i, entry in enumerate(entries):
                if task["name"] == "OCR":
                    entry |= {"answer": [entry["answer"], f"alt {i}"],
                              "answer_type": "Regular Text Recognition"}
                elif task["name"] == "VP":
                    entry |= {"type": "2D", "task": "Count"}
                elif task["name"] == "Sci":
                    source = "AI2D" if i == 0 else "MapQA"
                    old = bench / task["test_images"] / entry["image"]
                    entry["image"] = f"images/{source}_{i}.jpg"
                    old.rename(bench / task["test_images"] / entry["image"])
                    if i == 1:
                        entry |= {"text": "Which states have the highest value?",
                                  "answer": "ohio,utah"}
            (bench / task["test"]).write_text(json.dumps(entries))
    return bench


CIFAR_NAMES = [f"class_{i:02d}" for i in range(100)]


def cifar_pixels(label: int, index: int) -> np.ndarray:
    """A 32x32 RGB image whose three planes encode (label, index, 7)."""
    img = np.zeros((32, 32, 3), dtype=np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = label, index, 7
    return img


def _write_cifar_split(path: Path, per_class: int) -> None:
    # The published layout: one row per image = R plane, G plane, B plane (3 x 1024 bytes).
    labels = [y for _ in range(per_class) for y in range(100)]
    images = [cifar_pixels(y, i) for i, y in enumerate(labels)]
    rows = np.stack([im.transpose(2, 0, 1).reshape(-1) for im in images])
    data = {b"batch_label": b"fixture", b"data": rows, b"fine_labels": labels,
            b"coarse_labels": [y // 5 for y in labels],
            b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}
    with open(path, "wb") as f:
        pickle.dump(data, f)


def write_cifar100(data_root: Path, train_per_class: int = 2, test_per_class: int = 1) -> Path:
    """<data_root>/cifar-100-python/{train,test,meta}, classes named CIFAR_NAMES."""
    folder = data_root / "cifar-100-python"
    folder.mkdir(parents=True)
    _write_cifar_split(folder / "train", train_per_class)
    _write_cifar_split(folder / "test", test_per_class)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [n.encode() for n in CIFAR_NAMES],
                     b"coarse_label_names": [f"super_{i}".encode() for i in range(20)]}, f)
    return folder


def write_core50(data_root: Path, per_object: int = 2) -> Path:
    """All 11 sessions x 50 objects, `per_object` 4x4 PNGs each of the session's grey value."""
    folder = data_root / "core50_128x128"
    for s in range(1, 12):
        for o in range(1, 51):
            objects = folder / f"s{s}" / f"o{o}"
            objects.mkdir(parents=True)
            for i in range(per_object):
                # The published naming: C_<session>_<object>_<frame>.png
                pixels = np.full((4, 4, 3), s, dtype=np.uint8)
                Image.fromarray(pixels).save(objects / f"C_{s:02d}_{o:02d}_{i:03d}.png")
    return folder

"""Instruction-tuning benchmarks published as LLaVA-style JSON files (CoIN, COAST).

A stream YAML lists its tasks in order, each with its train and test annotation files (relative
to `<data_root>/<benchmark>/`) and the scorer its benchmark defines; image paths inside the
files are relative to the benchmark's image folder. Two entry formats are read, in either split:

* LLaVA conversation (LLaVA-1.5 `llava_v1_5_mix665k.json`, CoIN's `train.json`):
  ``{"id", "image", "conversations": [{"from": "human", "value": "<image>\\nQ"},
  {"from": "gpt", "value": "A"}, ...]}``; each human/gpt turn pair becomes one sample (later
  turns lose the earlier turns as context: mcl's samples are single-turn).
* question file (CoIN's `test.json`/`val.json`, read by its `ETrain/Eval/LLaVA/CoIN/model_vqa.py`
  and scored by the `eval_*.py` beside it): ``{"question_id", "image", "text", "answer"}``, plus
  ``"answer_bbox"`` (``"[x1, y1, x2, y2]"`` normalised to the padded square image) and
  ``"size"`` for grounding. An optional ``"answers"`` list (e.g. VQAv2's ten human answers) is
  used as the scorer's reference.

  A list ``"answer"`` (OCRBench's) trains on its first element. Scorers that need more of the
  entry (MLLM-CL's Sci and OCR) get the reference `mcl.metrics.mllm_cl.ENTRY_REFERENCES` builds.
* captions (UCIT's VizWiz-caption and Flickr30k, scored by HiDe-LLaVA's `eval_caption.py`): a
  task's `captions` file in COCO caption format (``{"images": [...], "annotations":
  [{"image_id", "caption"}, ...]}``) gives the k-th test question (1-based) the captions of
  image_id k, as that script pairs predictions with them; `match: cider` tasks then get the test
  split's CIDEr statistics (`mcl.metrics.captions.attach_corpus`).

The `<image>` placeholder is dropped from prompts: the backbone's chat template places the image.
Image paths are relative to the benchmark's image folder, or to a task's own `train_images` /
`test_images` folder where given (MLLM-CL keeps each task's images beside its files).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from mcl.data import prepared
from mcl.data.images import drop_bad_images
from mcl.data.task import MissingDataError, Sample, Stream, Task
from mcl.metrics.captions import attach_corpus
from mcl.metrics.mllm_cl import ENTRY_REFERENCES

FORMATS = ('LLaVA conversations [{"image": ..., "conversations": [{"from": "human", "value": '
           '...}, {"from": "gpt", "value": ...}]}] or questions [{"question_id": ..., "image": '
           '..., "text": ..., "answer": ...}]')


def prepare_command(benchmark: str, data_root: str | Path) -> str:
    """The command that fetches (where possible), checks and reports a benchmark's data."""
    return f"python -m mcl.data prepare {benchmark} --data-root {data_root}"


def _prompt(text: str) -> str:
    return text.replace("<image>\n", "").replace("\n<image>", "").replace("<image>", "").strip()


def _from_entry(entry: dict, image_root: Path, match: str) -> list[Sample]:
    image = image_root / entry["image"]
    if "conversations" in entry:
        turns = entry["conversations"]
        pairs = zip(turns[0::2], turns[1::2], strict=False)
        samples = [Sample(image, _prompt(q["value"]), a["value"].strip(), match)
                   for q, a in pairs if q["from"] == "human" and a["from"] == "gpt"]
        if not samples:
            raise KeyError("conversations holds no human/gpt turn pair")
        return samples
    answer = entry["answer"]
    answer = str(answer[0] if isinstance(answer, list) and answer else answer)
    reference = None
    if match in ENTRY_REFERENCES:
        reference = ENTRY_REFERENCES[match](entry)
    elif match == "grounding":
        reference = entry.get("answer_bbox", answer)
    elif match == "vqa" and isinstance(entry.get("answers"), list):
        reference = [str(a) for a in entry["answers"]]
    return [Sample(image, _prompt(entry["text"]), answer, match, reference)]


def read_annotations(path: Path, image_root: Path, match: str) -> list[Sample]:
    """The samples of one annotation file (either format above).

    Raises:
        ValueError: the file is not JSON, or an entry has neither format (names file + entry).
    """
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); expected a list of {FORMATS}") \
            from None
    if not isinstance(entries, list):
        raise ValueError(f"{path} holds a {type(entries).__name__}; expected a list of {FORMATS}")
    samples: list[Sample] = []
    for i, entry in enumerate(entries):
        try:
            samples += _from_entry(entry, image_root, match)
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{path}, entry {i}: missing or malformed field {err}; expected "
                             f"{FORMATS}. The entry: {json.dumps(entry)[:300]}") from None
    return samples


def _join_answers(samples: list[Sample], path: Path, entries_path: Path) -> None:
    """Give each sample the official list of human answers, joined on question_id (TextVQA:
    CoIN's `eval_textvqa.py` scores against `TextVQA_0.5.1_val.json`'s "answers")."""
    official = json.loads(path.read_text())
    official = official.get("data", official) if isinstance(official, dict) else official
    answers = {str(e["question_id"]): e["answers"] for e in official}
    ids = [str(e["question_id"]) for e in json.loads(entries_path.read_text())]
    for sample, qid in zip(samples, ids, strict=True):
        if qid not in answers:
            raise ValueError(f"question {qid} of {entries_path} has no answers in {path}")
        sample.reference = [str(a) for a in answers[qid]]


def _join_captions(samples: list[Sample], path: Path) -> None:
    """Give the k-th test sample (1-based) the COCO captions of image_id k (see the module
    docstring)."""
    if not path.is_file():
        raise MissingDataError(f"the caption file {path} is missing (COCO format: "
                               '{"images": [...], "annotations": [{"image_id", "caption"}]})')
    captions: dict[int, list[str]] = {}
    for item in json.loads(path.read_text())["annotations"]:
        captions.setdefault(int(item["image_id"]), []).append(str(item["caption"]))
    for k, sample in enumerate(samples, start=1):
        if k not in captions:
            raise ValueError(f"{path} has no caption with image_id {k}, which the {k}-th test "
                             "question is scored against (one image_id per question, from 1)")
        sample.reference = captions[k]


def _read_split(root: Path, image_root: Path, spec: dict, split: str, where: str) -> list[Sample]:
    path = root / spec[split]
    if not path.is_file():
        raise MissingDataError(f"{where}: the {split} annotations of task {spec['name']!r} are "
                               f"missing, expected at {path}")
    if spec.get(f"{split}_images"):
        image_root = root / spec[f"{split}_images"]
    samples = read_annotations(path, image_root, spec["match"])
    if split == "test" and spec.get("answers"):
        _join_answers(samples, root / spec["answers"], path)
    if split == "test" and spec.get("captions"):
        _join_captions(samples, root / spec["captions"])
    if split == "test" and spec["match"] == "vqa" and any(s.reference is None for s in samples):
        raise ValueError(
            f"task {spec['name']!r} is scored with VQA soft accuracy, which needs each "
            f"question's list of human answers: {path} has entries without an \"answers\" "
            "list; add one, or name the official answer file as the task's `answers` in the "
            "stream YAML")
    return samples


def instruction_stream(name: str, benchmark: str, data_root: str, tasks: Sequence[dict],
                       seed: int = 0, images: str = ".", skip_bad_images: bool = False,
                       manifest: dict | None = None) -> Stream:
    """The stream `name` of `benchmark`, read from `<data_root>/<benchmark>/`.

    `tasks` lists, in training order, dicts with `name`, `train`, `test` (annotation files
    relative to the benchmark directory), `match` (the scorer) and optionally `answers` (a file
    of official answer lists to join on question_id). Image paths are relative to
    `<data_root>/<benchmark>/<images>`. A table written by `python -m mcl.data prepare` is read
    instead of the files while they are unchanged. Missing or unreadable images raise an error
    naming the file unless `skip_bad_images`, which leaves such samples out and lists them in
    each task's `meta["bad_images"]` (their counts go to results.json). `seed` is unused: the
    order and splits are the benchmark's own; `manifest` (what the release holds) is checked by
    `python -m mcl.data prepare`, not here.
    """
    del seed, manifest
    root = Path(data_root).expanduser().resolve() / benchmark
    where = f"stream {name!r} of {benchmark} (run `{prepare_command(benchmark, data_root)}`)"
    if not root.is_dir():
        raise MissingDataError(
            f"stream {name!r} needs the {benchmark} benchmark, expected at {root}: run "
            f"`{prepare_command(benchmark, data_root)}` to fetch (where a network exists), check "
            f"and report it, or point data_root=<dir> (or MCL_DATA_ROOT) at a directory holding "
            f"{benchmark}/")
    image_root = root / images
    sources = [root / t[split] for t in tasks for split in ("train", "test")]
    sources += [root / t[key] for t in tasks for key in ("answers", "captions") if t.get(key)]
    cached = prepared.load(root, name, sources)
    built = []
    for spec in tasks:
        splits, bad = {}, {}
        for split in ("train", "test"):
            context = f"{benchmark} task {spec['name']} ({split})"
            if cached is None:
                samples = _read_split(root, image_root, spec, split, where)
                splits[split], bad[split] = drop_bad_images(
                    samples, lambda s: s.image, skip_bad_images, context)
            else:
                splits[split], bad[split] = drop_bad_images(
                    cached[0].get((spec["name"], split), []), lambda s: s.image,
                    skip_bad_images, context, cached[1].get(spec["name"], {}).get(split, []))
        if spec["match"] == "cider":  # CIDEr's document frequencies come from the whole split
            for sample, refs in zip(splits["test"], attach_corpus(
                    [s.reference for s in splits["test"]]), strict=True):
                sample.reference = refs
        meta = {"benchmark": benchmark, "match": spec["match"], "bad_images": bad}
        if spec.get("official_scorer"):  # the benchmark's own score needs what mcl lacks
            meta["official_scorer"] = spec["official_scorer"]
        built.append(Task(spec["name"], splits["train"], splits["test"], meta))
    return Stream(name, built)

"""5-shot MTIL and X-TAIL: the k-shot draw (exact k per class, fixed by the seed), the streams
read from fixtures in torchvision's layout (as ZSCL reads them), X-TAIL's label space (all
domains' classes, in stream order, at every row), and their toy analogues end to end."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import scipy.io
from hydra.utils import instantiate

from mcl.data import mtil, toy_classes
from mcl.data.fewshot import few_shot
from mcl.data.label_space import label_spaces
from mcl.run import run
from tests.conftest import compose_config
from tests.test_mtil_loader import _idx, _jpg, _write_all


def _per_class(samples) -> dict[str, int]:
    return dict(collections.Counter(s.answer for s in samples))


def test_few_shot_keeps_exactly_k_per_class_fixed_by_the_seed():
    items = [(f"img{i}", f"c{i % 4}") for i in range(40)]  # 10 per class
    a, b = few_shot(items, 3, seed=7), few_shot(items, 3, seed=7)
    assert a == b and collections.Counter(c for _, c in a) == {f"c{k}": 3 for k in range(4)}
    assert [items.index(x) for x in a] == sorted(items.index(x) for x in a)  # listing order
    other = few_shot(items, 3, seed=8)
    assert other != a and collections.Counter(c for _, c in other) == {f"c{k}": 3
                                                                       for k in range(4)}
    assert len(set(a)) == len(a)  # without replacement


def test_a_short_class_keeps_all_or_is_filled_with_replacement():
    items = [("a0", "a"), ("a1", "a"), *[(f"b{i}", "b") for i in range(9)]]
    kept = few_shot(items, 5, seed=0)
    assert collections.Counter(c for _, c in kept) == {"a": 2, "b": 5}
    filled = few_shot(items, 5, seed=0, repeat=True)
    got = collections.Counter(c for _, c in filled)
    assert got == {"a": 5, "b": 5} and {x for x, c in filled if c == "a"} <= {"a0", "a1"}
    assert [x for x in filled if x[1] == "b"] == [x for x in kept if x[1] == "b"]
    with pytest.raises(ValueError, match="train_shots must be a positive"):
        few_shot(items, 0, seed=0)


def _write_rich(root) -> None:
    """DTD, MNIST and Flowers with enough training images per class for 5- and 16-shot draws:
    DTD 3 classes x 8 listed in train1.txt; MNIST 10 digits x 7; Flowers 3 classes x 10 in
    trnid (ZSCL's Flowers split has 10 per class)."""
    dtd = root / "dtd" / "dtd"
    (dtd / "labels").mkdir(parents=True)
    classes = ["banded", "braided", "zigzagged"]
    train = [f"{c}/{c}_{i:04d}.jpg" for c in classes for i in range(8)]
    test = [f"{c}/{c}_{i:04d}.jpg" for c in classes for i in range(8, 10)]
    for name, rels in (("train1.txt", train), ("test1.txt", test)):
        (dtd / "labels" / name).write_text("\n".join(rels) + "\n")
        for rel in rels:
            _jpg(dtd / "images" / rel)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 70), ("t10k", 20)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", np.arange(n * 28 * 28).reshape(n, 28, 28) % 256)
        _idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    fl = root / "flowers-102"
    for i in range(1, 37):
        _jpg(fl / "jpg" / f"image_{i:05d}.jpg")
    labels = [1 + (i - 1) % 3 for i in range(1, 37)]
    scipy.io.savemat(fl / "imagelabels.mat", {"labels": np.array([labels])})
    scipy.io.savemat(fl / "setid.mat", {"trnid": np.array([list(range(1, 31))]),
                                        "valid": np.array([[31]]),
                                        "tstid": np.array([list(range(32, 37))])})


@pytest.fixture(scope="module")
def rich_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rich")
    _write_rich(root)
    return root


def _fewshot(root, *overrides):
    cfg = compose_config(["stream=mtil_fewshot", f"data_root={root}",
                          "stream.datasets=[DTD,MNIST,Flowers]", *overrides])
    return instantiate(cfg.stream, seed=0)


def test_five_shot_mtil_keeps_five_per_class_seeded_and_full_test_sets(rich_root):
    stream = _fewshot(rich_root)
    full = mtil.mtil_stream("m", str(rich_root), 0, datasets=["DTD", "MNIST", "Flowers"])
    for task, whole in zip(stream.tasks, full.tasks, strict=True):
        assert _per_class(task.train) == {c: 5 for c in _per_class(whole.train)}, task.name
        assert {s.image if isinstance(s.image, str) else s.image.tobytes() for s in task.train} \
            <= {s.image if isinstance(s.image, str) else s.image.tobytes() for s in whole.train}
        assert [s.answer for s in task.test] == [s.answer for s in whole.test]  # complete
        assert task.meta["train_shots"] == {"per_class": 5, "seed": 42, "repeat": False}
    again, other = _fewshot(rich_root), _fewshot(rich_root, "stream.shots_seed=1")
    dtd = [[s.image for s in st.tasks[0].train] for st in (stream, again, other)]
    assert dtd[0] == dtd[1] and dtd[0] != dtd[2]
    assert _per_class(other.tasks[0].train) == {"banded": 5, "braided": 5, "zigzagged": 5}


def test_xtail_sixteen_shot_fills_flowers_ten_per_class_with_repeats(rich_root):
    cfg = compose_config(["stream=xtail", f"data_root={rich_root}", "stream.datasets=[Flowers]"])
    task = instantiate(cfg.stream, seed=0).tasks[0]
    flowers = ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"]
    assert _per_class(task.train) == {c: 16 for c in flowers}  # the fixture's 3 classes
    # CoOp's random.choices: 16 draws with replacement out of the 10 training images of each.
    drawn = {int(s.image[-9:-4]) for s in task.train}
    assert drawn <= set(range(1, 31)) and len(drawn) < len(task.train)
    assert task.meta["train_shots"] == {"per_class": 16, "seed": 42, "repeat": True}


@pytest.fixture(scope="module")
def all_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("all")
    _write_all(root)
    return root


def test_yamls_hold_the_papers_orders_shots_and_seeds(all_root):
    few = compose_config(["stream=mtil_fewshot", f"data_root={all_root}"]).stream
    assert tuple(few.datasets) == mtil.ORDER_I and few.scenario == "mtil"
    assert (few.train_shots, few.shots_seed, few.shots_repeat) == (5, 42, False)
    xt = compose_config(["stream=xtail", f"data_root={all_root}"]).stream
    assert tuple(xt.datasets) == mtil.XTAIL_ORDER and "CIFAR100" not in xt.datasets
    assert (xt.train_shots, xt.shots_seed, xt.shots_repeat, xt.scenario) == (16, 42, True, "xtail")
    assert mtil.few_shot_sizes(5)["StanfordCars"] == 980
    assert sum(mtil.few_shot_sizes(16, mtil.XTAIL_ORDER).values()) == 16 * 1101


def test_xtail_scores_every_task_among_all_domains_classes_in_order(all_root):
    cfg = compose_config(["stream=xtail", f"data_root={all_root}"])
    stream = instantiate(cfg.stream, seed=0)
    assert stream.task_names == list(mtil.XTAIL_ORDER)
    union = list(dict.fromkeys(c for t in stream.tasks for c in t.meta["classes"]))
    assert union[:3] == ["707-320", "A300B4", "DC-10"]  # Aircraft's classes first
    assert union[-2:] == ["abbey", "apartment building/outdoor"]  # SUN397's last
    # Caltech101 and Flowers both name "lotus" and "sunflower": one candidate each.
    names = collections.Counter(c for t in stream.tasks for c in t.meta["classes"])
    assert sorted(c for c, n in names.items() if n > 1) == ["lotus", "sunflower"]
    assert len(union) == sum(len(t.meta["classes"]) for t in stream.tasks) - 2
    for trained in range(len(stream.tasks) + 1):  # seen and unseen domains, every row
        assert label_spaces(stream.tasks, trained) == [union] * len(stream.tasks)
    seen = instantiate(compose_config(["stream=xtail", f"data_root={all_root}",
                                       "stream.scenario=class_incremental"]).stream, seed=0)
    after2 = label_spaces(seen.tasks, 2)
    assert after2[0] == union[:3 + 101]  # the seen-so-far variant: Aircraft + Caltech101


SMALL = ["stream.test_size=4"]


def _toy(name: str, *overrides: str):
    return instantiate(compose_config([f"stream={name}", *SMALL, *overrides]).stream, seed=0)


def test_toy_mtil_fewshot_keeps_five_per_class_and_toy_mtils_label_sets():
    stream, full = _toy("toy_mtil_fewshot"), _toy("toy_mtil")
    assert stream.task_names == full.task_names
    for task, whole in zip(stream.tasks, full.tasks, strict=True):
        assert _per_class(task.train) == {c: 5 for c in task.meta["classes"]}, task.name
        assert all(any(s is w or np.array_equal(s.image, w.image) for w in whole.train)
                   for s in task.train[:3])
    assert label_spaces(stream.tasks, 2) == [t.meta["classes"] for t in stream.tasks]
    other = _toy("toy_mtil_fewshot", "stream.shots_seed=0")
    assert [s.image.tobytes() for s in other.tasks[0].train] != \
        [s.image.tobytes() for s in stream.tasks[0].train]


def test_toy_xtail_is_toy_mtil_scored_among_all_views_classes():
    stream = _toy("toy_xtail")
    union = [c for view in ("shapes", "digits", "textures", "charts", "colours")
             for c in toy_classes.VIEWS[view][0]]
    assert label_spaces(stream.tasks, 0) == label_spaces(stream.tasks, 5) == [union] * 5
    assert all(_per_class(t.train) == {c: 16 for c in t.meta["classes"]} for t in stream.tasks)
    aware = _toy("toy_xtail", "stream.task_aware=true").tasks  # a task id given: own classes
    assert label_spaces(aware, 3) == [t.meta["classes"] for t in aware]


MICRO = ["backbone=tiny_clip_micro", "logger=none", "trainer.progress_bar=false",
         "stream.train_size=40", "stream.test_size=8", "stream.train_shots=2"]


def test_toy_xtail_and_fewshot_run_end_to_end(tmp_path):
    xtail = run(compose_config(["stream=toy_xtail", "method=zero_shot", *MICRO]),
                tmp_path / "xtail")
    mtil_run = run(compose_config(["stream=toy_mtil", "method=zero_shot", *MICRO[:-1]]),
                   tmp_path / "mtil")
    x, m = np.array(xtail["matrix"]), np.array(mtil_run["matrix"])
    assert x.shape == m.shape == (6, 5) and (x == x[0]).all()  # one label space at every row
    # The same test images among a superset of candidates: never more right, here fewer.
    assert (x <= m + 1e-9).all() and x.sum() < m.sum()
    saved = json.loads((tmp_path / "xtail" / "results.json").read_text())
    assert saved["config"]["stream"]["shots_seed"] == 42
    few = run(compose_config(["stream=toy_mtil_fewshot", "method=finetune", "method.epochs=1",
                              *MICRO]), tmp_path / "few")
    f = np.array(few["matrix"])
    assert f.shape == (6, 5) and not np.isnan(f).any() and (f[1:] != f[0]).any()


def test_prepare_mtil_reports_the_few_shot_streams_counts(tmp_path, capsys):
    from mcl.data import prepare

    _write_all(tmp_path)
    prepare.main(["prepare", "mtil", "--data-root", str(tmp_path)])
    rows = [line.split()[:4] for line in capsys.readouterr().out.splitlines()]
    train = {(r[0], r[1]): int(r[3]) for r in rows if len(r) == 4 and r[2] == "train"}
    full = mtil.mtil_stream("m", str(tmp_path), 0)
    for task in full.tasks:
        counts = _per_class(task.train)
        assert train["mtil", task.name] == len(task.train)
        assert train["mtil_fewshot", task.name] == sum(min(5, n) for n in counts.values())
        if task.name in mtil.XTAIL_ORDER:  # 16 per class present, short ones filled
            assert train["xtail", task.name] == 16 * len(counts)
    assert ("xtail", "CIFAR100") not in train

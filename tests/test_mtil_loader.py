"""MTIL read from a few-sample copy of each of its 11 datasets, written in the layout ZSCL reads
(torchvision's): index files, .mat annotations, IDX and pickle files, generated images."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import scipy.io
from hydra.utils import instantiate
from PIL import Image

from mcl.data import mtil, mtil_classnames
from mcl.data.coast import MissingDataError
from mcl.data.images import BadImageError
from mcl.data.mtil_datasets import MNIST_CLASSES, zscl_split
from tests.conftest import compose_config

PIXELS = np.zeros((4, 4, 3), dtype=np.uint8)


def _jpg(path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(PIXELS).save(path)


def _idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_all(root) -> dict:
    """Write every dataset; returns the (train, test) counts each should give."""
    counts = {}
    # Aircraft: variants.txt + images_variant_{train,test}.txt ("<id> <variant>").
    air = root / "fgvc-aircraft-2013b" / "data"
    air.mkdir(parents=True)
    (air / "variants.txt").write_text("707-320\nA300B4\nDC-10\n")
    for split, ids in (("train", ["0001", "0002", "0003"]), ("test", ["0004", "0005"])):
        lines = [f"{i} {['707-320', 'A300B4', 'DC-10'][int(i) % 3]}" for i in ids]
        (air / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
        for i in ids:
            _jpg(air / "images" / f"{i}.jpg")
    counts["Aircraft"] = (3, 2)
    # Caltech101: 101 categories (+ BACKGROUND_Google), image_0001.jpg.. in each.
    cal = root / "caltech101" / "101_ObjectCategories"
    cats = ["BACKGROUND_Google", "Faces", "Faces_easy", "Leopards", "Motorbikes"] + [
        f"cat{i:03d}" for i in range(97)]
    for c in cats:
        for i in range(1, 3):
            _jpg(cal / c / f"image_{i:04d}.jpg")
    counts["Caltech101"] = (int(0.8 * 202), 202 - int(0.8 * 202))
    # CIFAR100: the python pickles.
    cif = root / "cifar-100-python"
    cif.mkdir()
    for split, n in (("train", 200), ("test", 100)):
        labels = [i % 100 for i in range(n)]
        with open(cif / split, "wb") as f:
            pickle.dump({b"data": np.zeros((n, 3072), np.uint8), b"fine_labels": labels}, f)
    with open(cif / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"aquarium_fish_{i}".encode() for i in range(100)]}, f)
    counts["CIFAR100"] = (200, 100)
    # DTD: labels/{train1,test1}.txt listing <class>/<file>.
    dtd = root / "dtd" / "dtd"
    (dtd / "labels").mkdir(parents=True)
    for split, files in (("train", ["banded/banded_0001.jpg", "zigzagged/zigzagged_0001.jpg"]),
                         ("test", ["banded/banded_0002.jpg"])):
        (dtd / "labels" / f"{split}1.txt").write_text("\n".join(files) + "\n")
        for rel in files:
            _jpg(dtd / "images" / rel)
    counts["DTD"] = (2, 1)
    # EuroSAT: an ImageFolder of the 10 classes.
    folders = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
               "Pasture", "PermanentCrop", "Residential", "River", "SeaLake"]
    for c in folders:
        for i in range(1, 4):
            _jpg(root / "eurosat" / "2750" / c / f"{c}_{i}.jpg")
    counts["EuroSAT"] = (24, 6)
    # Flowers: jpg/ + imagelabels.mat (labels 1..102) + setid.mat (trnid / valid / tstid).
    fl = root / "flowers-102"
    for i in range(1, 7):
        _jpg(fl / "jpg" / f"image_{i:05d}.jpg")
    scipy.io.savemat(fl / "imagelabels.mat", {"labels": np.array([[1, 2, 102, 1, 2, 102]])})
    scipy.io.savemat(fl / "setid.mat", {"trnid": np.array([[1, 2, 3]]), "valid": np.array([[4]]),
                                        "tstid": np.array([[5, 6]])})
    counts["Flowers"] = (3, 2)
    # Food: meta/{train,test}.json.
    food = root / "food-101"
    (food / "meta").mkdir(parents=True)
    for split, meta in (("train", {"apple_pie": ["apple_pie/1", "apple_pie/2"],
                                   "waffles": ["waffles/3"]}),
                        ("test", {"apple_pie": ["apple_pie/4"], "waffles": ["waffles/5"]})):
        (food / "meta" / f"{split}.json").write_text(json.dumps(meta))
        for rels in meta.values():
            for rel in rels:
                _jpg(food / "images" / f"{rel}.jpg")
    counts["Food"] = (3, 2)
    # MNIST: raw IDX files.
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 6), ("t10k", 4)):
        images = np.arange(n * 28 * 28).reshape(n, 28, 28) % 256
        _idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    counts["MNIST"] = (6, 4)
    # Oxford-IIIT Pet: annotations/{trainval,test}.txt ("<id> <class> <species> <breed>").
    pet = root / "oxford-iiit-pet"
    (pet / "annotations").mkdir(parents=True)
    (pet / "annotations" / "trainval.txt").write_text(
        "Abyssinian_100 1 1 1\namerican_bulldog_10 2 2 1\namerican_bulldog_11 2 2 1\n")
    (pet / "annotations" / "test.txt").write_text("Abyssinian_1 1 1 1\n")
    for image in ("Abyssinian_100", "american_bulldog_10", "american_bulldog_11",
                  "Abyssinian_1"):
        _jpg(pet / "images" / f"{image}.jpg")
    counts["OxfordPet"] = (3, 1)
    # Stanford Cars: .mat annotations (fname, class 1..N) and cars_meta.mat class_names.
    cars = root / "stanford_cars"
    (cars / "devkit").mkdir(parents=True)
    scipy.io.savemat(cars / "devkit" / "cars_meta.mat", {"class_names": np.array(
        ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"], dtype=object)})
    annos = np.dtype([("fname", object), ("class", object)])
    for mat, folder, rows in (
            (cars / "devkit" / "cars_train_annos.mat", "cars_train",
             [("00001.jpg", 1), ("00002.jpg", 2)]),
            (cars / "cars_test_annos_withlabels.mat", "cars_test", [("00001.jpg", 2)])):
        scipy.io.savemat(mat, {"annotations": np.array(rows, dtype=annos)})
        for fname, _ in rows:
            _jpg(cars / folder / fname)
    counts["StanfordCars"] = (2, 1)
    # SUN397: ClassName.txt + <letter>/<class path>/sun_*.jpg.
    sun = root / "SUN397"
    sun.mkdir()
    (sun / "ClassName.txt").write_text("/a/abbey\n/a/apartment_building/outdoor\n")
    for rel in ("a/abbey", "a/apartment_building/outdoor"):
        for i in range(5):
            _jpg(sun / rel / f"sun_{rel.count('/')}{i}.jpg")
    counts["SUN397"] = (8, 2)
    return counts


@pytest.fixture(scope="module")
def mtil_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return root, _write_all(root)


@pytest.mark.parametrize("config,order", [("mtil", mtil.ORDER_I), ("mtil_order2", mtil.ORDER_II)])
def test_yaml_builds_the_eleven_datasets_in_order(mtil_root, config, order):
    root, counts = mtil_root
    cfg = compose_config([f"stream={config}", f"data_root={root}"])
    stream = instantiate(cfg.stream, seed=0)
    assert cfg.stream.scenario == "mtil" and stream.task_names == list(order)
    for task in stream.tasks:
        assert (len(task.train), len(task.test)) == counts[task.name], task.name
        assert set(s.answer for s in task.train + task.test) <= set(task.meta["classes"])
        assert all(s.prompt == "" and s.match == "exact" for s in task.train)


def test_class_names_and_labels_per_dataset(mtil_root):
    root, _ = mtil_root
    tasks = {t.name: t for t in mtil.mtil_stream("m", str(root), 0).tasks}
    assert tasks["Aircraft"].meta["classes"] == ["707-320", "A300B4", "DC-10"]
    assert [s.answer for s in tasks["Aircraft"].train] == ["A300B4", "DC-10", "707-320"]
    assert tasks["Caltech101"].meta["classes"] == list(mtil_classnames.CALTECH101)
    assert tasks["CIFAR100"].meta["classes"][3] == "aquarium fish 3"
    assert tasks["DTD"].meta["classes"] == ["banded", "zigzagged"]
    assert tasks["EuroSAT"].meta["classes"] == list(mtil_classnames.EUROSAT)
    flowers = [s.answer for s in tasks["Flowers"].train + tasks["Flowers"].test]
    assert flowers == ["pink primrose", "hard-leaved pocket orchid", "blackberry lily",
                       "hard-leaved pocket orchid", "blackberry lily"]
    assert tasks["Food"].meta["classes"] == ["apple pie", "waffles"]
    assert tasks["MNIST"].meta["classes"] == MNIST_CLASSES
    digit = tasks["MNIST"].test[3]
    assert digit.answer == "3 - three" and digit.image.shape == (28, 28, 3)
    assert tasks["OxfordPet"].meta["classes"] == ["Abyssinian", "American Bulldog"]
    assert tasks["StanfordCars"].meta["classes"] == ["AM General Hummer SUV 2000",
                                                     "Acura RL Sedan 2012"]
    assert tasks["StanfordCars"].test[0].answer == "Acura RL Sedan 2012"
    assert tasks["SUN397"].meta["classes"] == ["abbey", "apartment building/outdoor"]
    assert isinstance(tasks["SUN397"].train[0].image, str)


def test_caltech_split_is_zscls_seeded_eighty_twenty(mtil_root):
    root, _ = mtil_root
    task = mtil.mtil_stream("m", str(root), 0, datasets=["Caltech101"]).tasks[0]
    # torchvision's order: categories sorted (BACKGROUND_Google left out), image_0001.. each.
    listed = [(c, i) for c in ["Faces", "Faces_easy", "Leopards", "Motorbikes"]
              + [f"cat{k:03d}" for k in range(97)] for i in (1, 2)]
    train_idx, test_idx = zscl_split(len(listed))
    expected = [f"{listed[i][0]}/image_{listed[i][1]:04d}.jpg" for i in test_idx]
    assert ["/".join(s.image.split("/")[-2:]) for s in task.test] == expected
    assert not {s.image for s in task.train} & {s.image for s in task.test}
    categories = sorted({c for c, _ in listed})
    names = dict(zip(categories, mtil_classnames.CALTECH101, strict=True))
    assert [s.answer for s in task.train] == [names[listed[i][0]] for i in train_idx]
    assert names["Faces"] == "off-center face" and names["Motorbikes"] == "motorbike"


def test_zscl_split_matches_torch_random_split():
    import torch

    train, test = zscl_split(50)
    sub_train, sub_test = torch.utils.data.random_split(
        range(50), [40, 10], generator=torch.Generator().manual_seed(42))
    assert train == list(sub_train.indices) and test == list(sub_test.indices)


def test_few_shot_keeps_k_per_class(mtil_root):
    root, _ = mtil_root
    task = mtil.mtil_stream("m", str(root), 0, datasets=["EuroSAT"], train_shots=1).tasks[0]
    assert sorted(s.answer for s in task.train) == sorted(mtil_classnames.EUROSAT)


def test_missing_datasets_are_named_in_one_message(tmp_path, mtil_root):
    with pytest.raises(MissingDataError) as err:
        mtil.mtil_stream("m", str(tmp_path), 0)
    msg = str(err.value)
    assert "'mtil'" in msg and "11 of its datasets" in msg
    assert str(tmp_path / "fgvc-aircraft-2013b" / "data") in msg
    assert "python -m mcl.data prepare mtil --data-root" in msg
    with pytest.raises(ValueError, match="unknown datasets"):
        mtil.mtil_stream("m", str(mtil_root[0]), 0, datasets=["ImageNet"])


def test_an_image_the_index_lists_but_is_absent_is_named(tmp_path):
    _write_all(tmp_path)
    (tmp_path / "food-101" / "images" / "waffles" / "5.jpg").unlink()
    with pytest.raises(BadImageError, match=r"mtil task Food \(test.*missing.*waffles/5\.jpg"):
        mtil.mtil_stream("m", str(tmp_path), 0, datasets=["Food"])
    (tmp_path / "dtd" / "dtd" / "labels" / "test1.txt").unlink()
    with pytest.raises(MissingDataError, match="test1.txt"):
        mtil.mtil_stream("m", str(tmp_path), 0, datasets=["DTD"])


def test_a_corrupt_image_is_named_at_start_up(tmp_path):
    _write_all(tmp_path)
    (tmp_path / "oxford-iiit-pet" / "images" / "Abyssinian_1.jpg").write_bytes(b"garbage")
    with pytest.raises(BadImageError, match="unreadable.*Abyssinian_1.jpg"):
        mtil.mtil_stream("m", str(tmp_path), 0, datasets=["OxfordPet"])


def test_validate_compares_with_zscls_split_sizes(mtil_root):
    problems = mtil.validate(str(mtil_root[0]), datasets=["DTD"])
    assert problems == ["DTD: 2 classes, the published dataset has 47",
                        "DTD: 2 classes have fewer than 5 training images (e.g. 'banded'): a "
                        "5-shot draw keeps fewer",
                        "DTD: 2 train / 1 test images, ZSCL's split has 1880 / 1880"]

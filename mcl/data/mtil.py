"""MTIL, Multi-domain Task-Incremental Learning (Zheng et al. 2023, "Preventing Zero-Shot Transfer
Degradation in Continual Learning of Vision-Language Models" (ZSCL), arXiv 2303.06628): CLIP
learns 11 classification datasets one after another; each task keeps its own label set.

Orders (as in ZSCL's scripts, Thunderbeee/ZSCL mtil/scripts/*.sh `dataset=(...)`):
- Order I: Aircraft, Caltech101, CIFAR100, DTD, EuroSAT, Flowers, Food, MNIST, OxfordPet,
  StanfordCars, SUN397 (alphabetical; ZSCL's main tables).
- Order II: StanfordCars, Food, MNIST, OxfordPet, Flowers, SUN397, Aircraft, Caltech101, DTD,
  EuroSAT, CIFAR100 (ZSCL's mtil/scripts/ZSCL_minus.sh and ZSCL_minus_WC_WiSE.sh, and the
  "order2" scripts of follow-up MTIL repositories, e.g. MoE-Adapters, CoLeCLIP).
Setting: ZSCL trains on each dataset's full training split ("full-shot"); `train_shots=k` keeps k
training images per class (5-shot MTIL, stream=mtil_fewshot; X-TAIL, stream=xtail), drawn by
`mcl.data.fewshot` with `shots_seed` (recorded in each task's meta["train_shots"]), not any
repository's exact draw. Test splits are always complete.

X-TAIL (Xu et al. 2024, RAIL, arXiv 2406.18868) reads the same loaders: 10 of the datasets (no
CIFAR100) in `XTAIL_ORDER`, 16 shots, scored among the classes of all its domains, no task id
(scenario "xtail", `mcl.data.label_space`). Its official code (RAIL's and CoDyRA's main.py)
reads CoOp's datasets (KaiyangZhou/CoOp DATASETS.md: split_zhou_*.json splits and their class
names) for the 9 non-MNIST domains, and one prompt template per domain; mcl uses ZSCL's splits
and names (this module) and one template, so its X-TAIL training pools, test sets and names
differ from the published protocol's wherever CoOp's differ from ZSCL's: numbers from stream=xtail
are not the published table's.

Layout: every dataset under the one data root, where torchvision would put it (ZSCL's loaders
are torchvision's); see `LAYOUT` and mcl/data/mtil_datasets.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from mcl.data import classification as cls
from mcl.data.fewshot import few_shot, shots_meta
from mcl.data.mtil_datasets import BENCHMARK, READERS
from mcl.data.task import Stream

ORDER_I = ("Aircraft", "Caltech101", "CIFAR100", "DTD", "EuroSAT", "Flowers", "Food", "MNIST",
           "OxfordPet", "StanfordCars", "SUN397")
ORDER_II = ("StanfordCars", "Food", "MNIST", "OxfordPet", "Flowers", "SUN397", "Aircraft",
            "Caltech101", "DTD", "EuroSAT", "CIFAR100")
# RAIL's configs/analytic_clip.yaml, CoDyRA's main.py `--datasets`: Order I less CIFAR100.
XTAIL_ORDER = ("Aircraft", "Caltech101", "DTD", "EuroSAT", "Flowers", "Food", "MNIST", "OxfordPet",
               "StanfordCars", "SUN397")
LAYOUT = """<data_root>/  (torchvision's layout for each dataset, as ZSCL reads them)
  fgvc-aircraft-2013b/data/{variants.txt, images_variant_train.txt, images_variant_test.txt,
                            images/<id>.jpg}
  caltech101/101_ObjectCategories/<category>/image_0001.jpg ..
  cifar-100-python/{train, test, meta}
  dtd/dtd/{labels/train1.txt, labels/test1.txt, images/<class>/<file>.jpg}
  eurosat/2750/<Class>/<Class>_<n>.jpg
  flowers-102/{jpg/image_00001.jpg .., imagelabels.mat, setid.mat}
  food-101/{meta/train.json, meta/test.json, images/<class>/<id>.jpg}
  MNIST/raw/{train,t10k}-images-idx3-ubyte, {train,t10k}-labels-idx1-ubyte  (or .gz)
  oxford-iiit-pet/{annotations/trainval.txt, annotations/test.txt, images/<id>.jpg}
  stanford_cars/{devkit/cars_meta.mat, devkit/cars_train_annos.mat,
                 cars_test_annos_withlabels.mat, cars_train/, cars_test/}
  SUN397/{ClassName.txt, <letter>/<class>/sun_*.jpg}"""


def _check_present(root: Path, datasets: Sequence[str]) -> None:
    unknown = [d for d in datasets if d not in READERS]
    if unknown:
        raise ValueError(f"{BENCHMARK}: unknown datasets {unknown}; valid: {', '.join(READERS)}")
    if len(set(datasets)) != len(datasets):
        raise ValueError(f"{BENCHMARK}: datasets repeat a name: {list(datasets)}")
    absent = [root / READERS[d][1] for d in datasets if not (root / READERS[d][1]).exists()]
    if absent:
        raise cls.missing_data(BENCHMARK, absent[0], f"{len(absent)} of its datasets in "
                               f"torchvision's layout (absent: {', '.join(map(str, absent))})",
                               root)


def _read(root: Path, dataset: str) -> tuple[list[str], list, list]:
    try:
        return READERS[dataset][0](root)
    except FileNotFoundError as err:
        raise cls.missing_data(BENCHMARK, Path(err.filename or root / READERS[dataset][1]),
                               f"the {dataset} file it reads", root) from None


def mtil_stream(name: str, data_root: str, seed: int, datasets: Sequence[str] = ORDER_I,
                train_shots: int | None = None, shots_seed: int = 0, shots_repeat: bool = False,
                scenario: str = "mtil", skip_bad_images: bool = False) -> Stream:
    """One task per dataset, in `datasets` order.

    `train_shots`: k training images per class (`mcl.data.fewshot.few_shot` with `shots_seed`;
    `shots_repeat` fills a class with fewer by drawing with replacement, as X-TAIL's code does).

    Each image file's header is read at start-up: a missing or bad file (e.g. one an index file
    lists but the folder lacks) raises an error naming it unless `skip_bad_images` (then it is
    left out and listed in `meta["bad_images"]`). CIFAR100 and MNIST are arrays: nothing to
    check."""
    root = cls.root_dir(data_root)
    _check_present(root, datasets)
    tasks = []
    for dataset in datasets:
        classes, train, test = _read(root, dataset)
        if train_shots is not None:
            train = few_shot(train, train_shots, shots_seed, shots_repeat)
        tasks.append(cls.usable_task(BENCHMARK, dataset, train, test, classes, skip_bad_images,
                                     dataset=dataset, scenario=scenario,
                                     **shots_meta(train_shots, shots_seed, shots_repeat)))
    return Stream(name, tasks)


# Split sizes of the full datasets, as ZSCL loads them (torchvision's splits; 80/20 of all
# images for Caltech101, EuroSAT, SUN397), for `validate`.
EXPECTED = {"Aircraft": (3334, 3333), "Caltech101": (6941, 1736), "CIFAR100": (50000, 10000),
            "DTD": (1880, 1880), "EuroSAT": (21600, 5400), "Flowers": (1020, 6149),
            "Food": (75750, 25250), "MNIST": (60000, 10000), "OxfordPet": (3680, 3669),
            "StanfordCars": (8144, 8041), "SUN397": (87003, 21751)}


# Class counts of the datasets (the published ones, as ZSCL names them): a k-shot stream's
# training split holds k x these images per dataset (few_shot_sizes).
NUM_CLASSES = {"Aircraft": 100, "Caltech101": 101, "CIFAR100": 100, "DTD": 47, "EuroSAT": 10,
               "Flowers": 102, "Food": 101, "MNIST": 10, "OxfordPet": 37, "StanfordCars": 196,
               "SUN397": 397}


def few_shot_sizes(shots: int, datasets: Sequence[str] = ORDER_I) -> dict[str, int]:
    """Training images per dataset of a `shots`-shot stream on the full data (every class of
    ZSCL's training splits has at least 5 images; Flowers has 10, so 16-shot X-TAIL needs
    shots_repeat=true there to reach 16)."""
    return {d: shots * NUM_CLASSES[d] for d in datasets}


def validate(data_root: str, datasets: Sequence[str] = ORDER_I, shots: int = 5) -> list[str]:
    """What is missing or malformed for MTIL under `data_root` (empty when ready): the published
    split sizes and class counts, and whether every class has `shots` training images (5-shot
    MTIL's, stream=mtil_fewshot, so that it holds few_shot_sizes(shots) images)."""
    root = cls.root_dir(data_root)
    problems = []
    for dataset in datasets:
        try:
            # Bad image files are not a validation problem here: prepare's rows list them.
            task = mtil_stream("mtil", str(root), 0, datasets=[dataset],
                               skip_bad_images=True).tasks[0]
        except (FileNotFoundError, ValueError) as err:
            problems.append(str(err))
            continue
        got = tuple(len(getattr(task, split)) + len(task.meta["bad_images"][split])
                    for split in ("train", "test"))
        if len(task.meta["classes"]) != NUM_CLASSES[dataset]:
            problems.append(f"{dataset}: {len(task.meta['classes'])} classes, the published "
                            f"dataset has {NUM_CLASSES[dataset]}")
        per_class = Counter(sample.answer for sample in task.train)
        short = [c for c in task.meta["classes"] if per_class[c] < shots]
        if short:
            problems.append(f"{dataset}: {len(short)} classes have fewer than {shots} training "
                            f"images (e.g. {short[0]!r}): a {shots}-shot draw keeps fewer")
        if dataset in EXPECTED and got != EXPECTED[dataset]:
            problems.append(f"{dataset}: {got[0]} train / {got[1]} test images, ZSCL's split "
                            f"has {EXPECTED[dataset][0]} / {EXPECTED[dataset][1]}")
    return problems

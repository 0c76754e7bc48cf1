"""Which classes a classification task is trained and scored among, at each point of a stream:
the one place that decides label spaces (backbones and the loop only apply them).

A classification task carries meta["classes"] (its label set), meta["scenario"] and
meta["task_aware"]; instruction tasks carry none, and get no label space (answers are generated).

- task-aware (`task_aware: true` in the stream YAML): every task among its own classes;
- domain-incremental: every task has the same classes, scored among them;
- MTIL: every data set within its own label set (as ZSCL/MTIL evaluate, Zheng et al. 2023);
- X-TAIL (cross-domain task-agnostic, Xu et al. 2024, RAIL): every task, trained or not, among
  the classes of all the stream's domains, seen and unseen, with no domain hint, at every row
  (RAIL's and CoDyRA's main.py score each test set against the text features of all the
  sequence's class names). A class name two domains share (e.g. "lotus", "sunflower" in
  Caltech101 and Flowers) is one candidate here, where the official code keeps one per domain
  (with its domain's prompt template) and counts the other domain's one wrong;
- class-incremental (task-agnostic, the default): among all classes seen so far, current task
  included. A task not trained yet (the zero-shot row, FWT and Transfer) is scored among the
  classes the stream has revealed up to and including that task, as if the stream had reached it:
  this keeps its own classes in the candidates, so that CLIP can score it zero-shot.
"""

from __future__ import annotations

from collections.abc import Sequence

from mcl.data.task import Sample, Task


def is_classification(tasks: Sequence[Task]) -> bool:
    return bool(tasks) and all("classes" in t.meta for t in tasks)


def training_label_space(samples: Sequence[Sample]) -> list[str]:
    """The classes a set of training samples (one task's, or the union a method mixes in) is
    trained among: their sorted class names. The backbone's `encode` gives its items this space
    by default, and the loop gives a whole training set one space (not one per batch)."""
    return sorted({s.answer for s in samples})


def label_spaces(tasks: Sequence[Task], trained: int) -> list[list[str]] | None:
    """The label space of every task after `trained` tasks have been trained (row `trained` of
    the accuracy matrix); None for instruction streams."""
    if not is_classification(tasks):
        return None
    spaces = []
    every = list(dict.fromkeys(c for t in tasks for c in t.meta["classes"]))
    for j, task in enumerate(tasks):
        own = task.meta["scenario"] in ("domain_incremental", "mtil")
        if own or task.meta.get("task_aware", False):
            spaces.append(list(task.meta["classes"]))
        elif task.meta["scenario"] == "xtail":
            spaces.append(list(every))
        else:
            reach = max(trained - 1, j)  # the last task whose classes are revealed
            spaces.append(list(dict.fromkeys(c for t in tasks[: reach + 1]
                                             for c in t.meta["classes"])))
    return spaces

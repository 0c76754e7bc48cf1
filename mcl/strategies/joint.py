"""Joint (multi-task) training on every task seen so far: the upper bound of every table."""

from collections.abc import Sequence

from mcl.data.task import Sample, Task
from mcl.strategies.base import register
from mcl.strategies.finetune import Finetune


@register("joint")
class Joint(Finetune):
    """Fine-tunes on the union of the training sets of all tasks seen so far.

    It sees old data, so it is not a continual method; it bounds what the trainable part can
    reach on the stream.
    """

    def train_samples(self, seen: Sequence[Task]) -> list[Sample]:
        return [sample for task in seen for sample in task.train]

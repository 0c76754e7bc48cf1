"""Zero-shot: the pre-trained backbone, never trained; the lower bound of every table."""

from mcl.strategies.base import ContinualStrategy, register


@register("zero_shot")
class ZeroShot(ContinualStrategy):
    """Trains nothing: every row of its matrix equals the zero-shot row."""

    families = frozenset({"instruction", "classification"})

    def __init__(self, **kwargs) -> None:
        # It never trains, so it has no optimiser settings (conf/method/zero_shot.yaml sets
        # none); these placeholders only satisfy the base class, and a config may override them.
        super().__init__(**{"lr": 1.0, "weight_decay": 0.0, "epochs": 1, "batch_size": 1}
                         | kwargs)

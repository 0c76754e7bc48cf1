"""Zero-shot: the pre-trained backbone, never trained; the lower bound of every table."""

from mcl.strategies.base import ContinualStrategy, register


@register("zero_shot")
class ZeroShot(ContinualStrategy):
    """Trains nothing: every row of its matrix equals the zero-shot row."""

    families = frozenset({"instruction", "classification"})

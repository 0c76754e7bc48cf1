"""FSDP refuses the MCIT baselines whose step needs whole parameters (EWC's penalty, LwF's
teacher swap, O-LoRA's orthogonality loss) and accepts those that only add data or adapters."""

import pytest

from mcl.compatibility import check_trainer
from mcl.strategies import build_strategy


@pytest.mark.parametrize(("name", "shardable"), [
    ("ewc", False), ("lwf", False), ("o_lora", False), ("moe_lora", True), ("replay", True)])
def test_fsdp_accepts_only_the_shardable_baselines(name, shardable):
    strategy = build_strategy(name)
    fsdp = {"name": "fsdp"}
    if shardable:
        check_trainer(strategy, fsdp)
    else:
        with pytest.raises(ValueError, match=f"method {name!r} cannot train under FSDP"):
            check_trainer(strategy, fsdp)

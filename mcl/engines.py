"""Where evaluation answers come from: mcl's own decoders or an optional inference engine.

- `static` (default): `mcl.generation`, a static KV cache and a CUDA-graph decode step.
- `hf`: transformers' `generate` with its dynamic cache (the reference the first is tested
  against).
- `vllm`: vLLM, for users who have it installed (not an mcl dependency). It serves the
  backbone's weights as `save_pretrained` writes them, so only methods that answer with the
  backbone's own `generate` and leave plain weights (zero_shot, finetune, CoDyRA after its merge)
  can use it. NOT run in mcl's CI (no GPU there, no vLLM): only its selection and its errors are
  tested.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Sequence

BACKENDS = ("static", "hf", "vllm")


def check_backend(name: str) -> None:
    """Fail before any long work if `name` is unknown or its engine is not installed."""
    if name not in BACKENDS:
        raise ValueError(f"evaluation.backend={name!r} is not one of {BACKENDS}")
    if name == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ImportError(
            "evaluation.backend=vllm needs vLLM, which is not installed here. It is optional "
            "and not an mcl dependency: `pip install vllm` on a CUDA machine, or use "
            "evaluation.backend=static (mcl's static-cache decoder, the default)")


def use_backend(strategy, name: str) -> None:
    """Point the strategy's backbone at the backend `name` (checked with `check_backend`)."""
    check_backend(name)
    backbone = strategy.backbone
    if name in ("static", "hf"):
        if hasattr(backbone, "decoding"):  # generative backbones; classification needs none
            backbone.decoding = name
        return
    from mcl.strategies.base import ContinualStrategy

    if type(strategy).generate is not ContinualStrategy.generate or not hasattr(backbone,
                                                                                 "prompt_text"):
        raise ValueError(f"evaluation.backend={name} serves the backbone's weights alone; "
                         f"method {strategy.name!r} on backbone {backbone.name!r} answers "
                         "through its own modules: use evaluation.backend=static")


class VLLMAnswers:
    """Greedy answers from vLLM for raw samples, on the backbone's current weights (written
    with save_pretrained to a temporary directory for vLLM to load). Not run in CI."""

    takes_samples = True  # mcl.evaluate passes raw samples: vLLM runs its own processor

    def __init__(self, backbone, gpu_memory_utilization: float = 0.5) -> None:
        from vllm import LLM, SamplingParams

        self.backbone = backbone
        self.directory = tempfile.TemporaryDirectory(prefix="mcl-vllm-")
        backbone.model.save_pretrained(self.directory.name)
        backbone.processor.save_pretrained(self.directory.name)
        self.llm = LLM(model=self.directory.name, dtype=str(backbone.model.dtype).split(".")[-1],
                       gpu_memory_utilization=gpu_memory_utilization,
                       limit_mm_per_prompt={"image": 1})
        self.params = SamplingParams(temperature=0.0, max_tokens=backbone.max_new_tokens)

    def __call__(self, samples: Sequence) -> list[str]:
        from PIL import Image

        from mcl.data.images import load_image

        requests = []
        for sample in samples:
            image = load_image(sample.image)
            if self.backbone.pad_to_square:
                image = self.backbone._pad_to_square(image)
            requests.append({"prompt": self.backbone.prompt_text(sample.prompt),
                             "multi_modal_data": {"image": Image.fromarray(image)}})
        outputs = self.llm.generate(requests, self.params, use_tqdm=False)
        return [o.outputs[0].text.strip() for o in outputs]

"""Every backbone implements the interface of mcl/backbones/base.py: the members of each
capability it declares are its own (and work), a member of a capability it lacks says so, and its
class-level spec is what the compatibility check reads."""


import inspect

import pytest
from conftest import compose_config
from hydra.utils import instantiate

from mcl.backbones.base import CAPABILITY_MEMBERS, Backbone, BackboneSpec, MissingCapability
from mcl.compatibility import backbone_spec

MICRO = ["tiny_llava_micro", "tiny_clip_micro", "tiny_vit_micro", "tiny_llava_next",
         "tiny_llava_onevision", "tiny_qwen2_vl", "tiny_qwen2_5_vl", "tiny_internvl",
         "tiny_idefics3"]


@pytest.mark.parametrize("name", MICRO)
def test_declared_capabilities_are_implemented_and_the_others_refused(name):
    node = compose_config([f"backbone={name}"]).backbone
    spec = backbone_spec(node)
    backbone = instantiate(node, _convert_="all")
    assert isinstance(backbone, Backbone) and backbone.spec == spec
    assert isinstance(spec, BackboneSpec) and set(spec.part_names) == set(backbone.parts())
    declared = {m for c in spec.capabilities for m in CAPABILITY_MEMBERS[c]}
    for member in declared:
        assert getattr(type(backbone), member) is not getattr(Backbone, member), (name, member)
        getattr(backbone, member)  # properties evaluate, methods resolve
    missing = {m for c, members in CAPABILITY_MEMBERS.items() if c not in spec.capabilities
               for m in members} - declared
    for member in missing:
        with pytest.raises(MissingCapability, match="lacks the capability"):
            value = getattr(backbone, member)
            if callable(value):
                required = [p for p in inspect.signature(value).parameters.values()
                            if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
                value(*[None] * len(required))
    if "linear_layers" in spec.capabilities:
        names = backbone.linear_layer_names(list(spec.part_names))
        assert names and all(backbone.linear_layer(n).weight.ndim == 2 for n in names)

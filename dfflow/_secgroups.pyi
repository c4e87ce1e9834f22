from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dfflow._packer import FlowLayout

SG_RULE_FIELDS: tuple[str, ...]
SG_MEMBER_FIELDS: tuple[str, ...]
SG_SHAPE_FIELDS: tuple[str, ...]
SG_EGRESS: int
SG_INGRESS: int
SG_FLAG_LOW: int
SG_FLAG_HIGH: int
SG_FLAG_GROUP: int

class SecGroupProgram:
    """The pipeline's tables and priorities security-group flows use, over a flow layout."""

    def __init__(self, layout: FlowLayout, shape: Mapping[str, int]) -> None: ...

def compile_secgroups(
    program: SecGroupProgram,
    zone: int,
    vni: int,
    cookie: int,
    macs: Sequence[int] | np.ndarray[Any, np.dtype[Any]],
    rules: np.ndarray[Any, np.dtype[Any]],
    members: np.ndarray[Any, np.dtype[Any]],
    arriving: bool,
) -> np.ndarray[Any, np.dtype[Any]]: ...

"""Which Python types the sandbox lets a workflow pass where another is declared: FlyteAdmin's rules
(flytepropeller's ``AreTypesCastable``), on the types flytekit declares for real annotations."""

from __future__ import annotations

import enum
import typing
from dataclasses import dataclass

import pytest
from pydantic import BaseModel
from flytekit import kwtypes
from flytekit.core.type_engine import TypeEngine
from flytekit.types.file import FlyteFile
from flytekit.types.structured import StructuredDataset

from fastreg_magic.sandbox.literal_types import castable


class Colour(enum.Enum):
    RED = "red"


@dataclass
class Point:
    x: int
    label: str


@dataclass
class LabelledPoint(Point):
    colour: str = "red"


@dataclass
class Other:
    name: str


class Inner(BaseModel):
    a: int


class Outer(BaseModel):
    inner: Inner
    note: str


class OuterMore(BaseModel):
    inner: Inner
    note: str
    extra: int = 0


class OuterWrong(BaseModel):
    inner: int
    note: str


WIDE = typing.Annotated[StructuredDataset, kwtypes(a=int, b=str)]
NARROW = typing.Annotated[StructuredDataset, kwtypes(a=int)]
WRONG_COLUMN = typing.Annotated[StructuredDataset, kwtypes(a=str)]


@pytest.mark.parametrize("given, declared, fits", [
    (int, int, True),
    (int, float, False),  # FlyteAdmin does not widen numbers
    (int, typing.Optional[int], True),
    (typing.Optional[int], int, False),
    (int, typing.Union[int, str], True),
    (typing.Optional[int], typing.Optional[typing.Union[int, str]], True),
    (typing.Union[int, str], typing.Optional[int], False),
    (str, Colour, True),
    (Colour, str, True),
    (typing.List[int], typing.List[typing.Optional[int]], True),
    (typing.List[int], typing.List[str], False),
    (typing.Dict[str, int], typing.Dict[str, str], False),
    (typing.List[int], int, False),
    (FlyteFile, FlyteFile[typing.TypeVar("csv")], True),  # a file of any format fits
    (FlyteFile[typing.TypeVar("csv")], FlyteFile[typing.TypeVar("pdf")], False),
    (LabelledPoint, Point, True),  # a child dataclass where its parent is declared
    (Point, LabelledPoint, False),
    (Other, Point, False),
    (dict, Point, True),  # an untyped dict has no schema to compare
    (OuterMore, Outer, True),  # pydantic models, with a nested model ($defs)
    (Outer, OuterMore, False),
    (OuterWrong, Outer, False),
    (WIDE, NARROW, True),  # a dataframe with the declared columns, and more
    (NARROW, WIDE, False),
    (WRONG_COLUMN, NARROW, False),
    (StructuredDataset, NARROW, True),
])
def test_castability_follows_flyteadmin(given, declared, fits):
    assert castable(declared_type(given), declared_type(declared)) is fits


def declared_type(python_type):
    """The LiteralType flytekit registers for an annotation."""
    return TypeEngine.to_literal_type(python_type).to_flyte_idl()

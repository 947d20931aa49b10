"""The qfx IR: an immutable Program value, lifted from an observed FX GraphModule."""

from .args import DictArg, ListArg, Ref, SliceArg, TupleArg
from .errors import (
    CodegenError,
    ConvertAssertionError,
    ConvertError,
    ConvertValueError,
    LiftError,
    NotObservedModelError,
    PassError,
    PipelineSpecError,
    QfxError,
    UnsupportedError,
    VerificationError,
)
from .graph import Graph, Node, ref
from .lift import lift
from .namespace import NameAllocator, Namespace
from .printer import print_program
from .program import CallingConvention, ConvertOptions, Program, QuantFacts, RootInfo
from .verify import verify

__all__ = [
    "CallingConvention", "CodegenError", "ConvertAssertionError", "ConvertError", "ConvertValueError", "ConvertOptions", "DictArg", "Graph", "LiftError", "ListArg", "NameAllocator", "Namespace",
    "Node", "NotObservedModelError", "PassError", "PipelineSpecError", "Program", "QfxError", "QuantFacts", "Ref",
    "RootInfo", "SliceArg", "TupleArg", "UnsupportedError", "VerificationError", "lift", "print_program", "ref",
    "verify",
]

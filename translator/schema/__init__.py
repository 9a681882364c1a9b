"""Caffe's protobuf message classes, loaded from the committed descriptor set caffe.desc."""

from __future__ import annotations

import functools
from importlib import resources

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

__all__ = [
    "BNParameter",
    "BlobProto",
    "BlobProtoVector",
    "BlobShape",
    "EltwiseParameter",
    "LRNParameter",
    "LayerParameter",
    "NetParameter",
    "NetState",
    "NetStateRule",
    "Pooling3DParameter",
    "PoolingParameter",
    "PriorBoxParameter",
    "ReductionParameter",
    "V0LayerParameter",
    "V1LayerParameter",
    "enum_values",
    "is_repeated",
    "message_class",
]

_PACKAGE = "caffe"

# The classes the rest of the translator names; any other comes from message_class().
_EXPORTED = (
    "NetParameter",
    "LayerParameter",
    "V1LayerParameter",
    "V0LayerParameter",
    "BlobProto",
    "BlobShape",
    "BlobProtoVector",
    "NetState",
    "NetStateRule",
    # Their enums (PoolingParameter.MAX, ...) name the values of the emitters' fields.
    "BNParameter",
    "EltwiseParameter",
    "LRNParameter",
    "Pooling3DParameter",
    "PoolingParameter",
    "PriorBoxParameter",
    "ReductionParameter",
)


@functools.cache
def _pool() -> descriptor_pool.DescriptorPool:
    # A private pool, so that another caffe.proto loaded into the default pool cannot clash.
    # Loaded on first use, so that the build script can regenerate a missing caffe.desc.
    data = resources.files(__name__).joinpath("caffe.desc").read_bytes()
    pool = descriptor_pool.DescriptorPool()
    for file_proto in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        pool.AddSerializedFile(file_proto.SerializeToString())
    return pool


@functools.cache
def _factory() -> message_factory.MessageFactory:
    # One factory for all classes, or nested messages would get classes of their own.
    return message_factory.MessageFactory(_pool())


def _class_of(descriptor: Descriptor) -> type[Message]:
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(descriptor)
    return _factory().GetPrototype(descriptor)  # protobuf before GetMessageClass existed


@functools.cache
def message_class(name: str) -> type[Message]:
    """The class of the Caffe message ``name`` ("PoolingParameter" or "caffe.PoolingParameter").

    Raises KeyError for a name the schema does not define.
    """
    full_name = name if name.startswith(f"{_PACKAGE}.") else f"{_PACKAGE}.{name}"
    return _class_of(_pool().FindMessageTypeByName(full_name))


@functools.cache
def enum_values(name: str) -> dict[str, int]:
    """The values of the top-level Caffe enum ``name`` ("Phase"), by value name."""
    enum = _pool().FindEnumTypeByName(f"{_PACKAGE}.{name}")
    return {value.name: value.number for value in enum.values}


def is_repeated(field: FieldDescriptor) -> bool:
    """Whether ``field`` is repeated, on every protobuf the package supports."""
    # FieldDescriptor.is_repeated is recent; label is deprecated there but present everywhere.
    repeated = getattr(field, "is_repeated", None)
    if repeated is not None:
        return bool(repeated)
    return field.label == field.LABEL_REPEATED


def __getattr__(name: str) -> type[Message]:
    if name in _EXPORTED:
        return message_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTED])

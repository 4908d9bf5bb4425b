"""Protobuf message classes built at run time from a descriptor (no protoc needed): the test
schema of the registry codec tests."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: int, *, label: int = F.LABEL_OPTIONAL,
           type_name: str = "", oneof: int | None = None, optional: bool = False) -> F:  # fmt: skip
    field = F(name=name, number=number, type=kind, label=label, json_name=name)  # type: ignore[arg-type]
    if type_name:
        field.type_name = type_name
    if oneof is not None:
        field.oneof_index = oneof
    if optional:
        field.proto3_optional = True
    return field


def shop_file(package: str) -> descriptor_pb2.FileDescriptorProto:
    """`Key`, `Order` (nested `Line`, an enum, a map, a oneof, an optional) and `Total`: three
    top-level messages, so Total's index list is [2] and Line's [1, 0]."""
    file = descriptor_pb2.FileDescriptorProto(name=f"{package}.proto", package=package)
    file.syntax = "proto3"
    file.message_type.add(name="Key").field.append(_field("customer", 1, F.TYPE_STRING))
    order = file.message_type.add(name="Order")
    color = order.enum_type.add(name="Color")
    color.value.add(name="RED", number=0)
    color.value.add(name="BLUE", number=1)
    line = order.nested_type.add(name="Line")
    line.field.append(_field("sku", 1, F.TYPE_STRING))
    line.field.append(_field("qty", 2, F.TYPE_INT32))
    entry = order.nested_type.add(name="TagsEntry")
    entry.options.map_entry = True
    entry.field.append(_field("key", 1, F.TYPE_STRING))
    entry.field.append(_field("value", 2, F.TYPE_INT64))
    order.oneof_decl.add(name="payment")
    order.oneof_decl.add(name="_note")
    order.field.extend([
        _field("id", 1, F.TYPE_INT64),
        _field("amount", 2, F.TYPE_DOUBLE),
        _field("color", 3, F.TYPE_ENUM, type_name=f".{package}.Order.Color"),
        _field("lines", 4, F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
               type_name=f".{package}.Order.Line"),
        _field("tags", 5, F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
               type_name=f".{package}.Order.TagsEntry"),
        _field("card", 6, F.TYPE_STRING, oneof=0),
        _field("voucher", 7, F.TYPE_INT64, oneof=0),
        _field("note", 8, F.TYPE_STRING, oneof=1, optional=True),
    ])  # fmt: skip
    total = file.message_type.add(name="Total")
    total.field.append(_field("id", 1, F.TYPE_INT64))
    total.field.append(_field("total", 2, F.TYPE_DOUBLE))
    return file


def shop_messages(package: str = "streamkit.test") -> dict[str, Any]:
    """The message classes of shop_file, by name (`Order.Line` for the nested one)."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(shop_file(package))
    file = pool.FindFileByName(f"{package}.proto")
    classes = {
        name: message_factory.GetMessageClass(d) for name, d in file.message_types_by_name.items()
    }
    classes["Order.Line"] = message_factory.GetMessageClass(
        file.message_types_by_name["Order"].nested_types_by_name["Line"]
    )
    return classes


def event_with_timestamp(package: str) -> Any:
    """A message `Event {google.protobuf.Timestamp at = 1; int32 n = 2;}` whose file imports
    a well-known type."""
    from google.protobuf import timestamp_pb2

    pool = descriptor_pool.DescriptorPool()
    well_known = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(well_known)
    pool.Add(well_known)
    file = descriptor_pb2.FileDescriptorProto(
        name=f"{package}.proto", package=package, dependency=["google/protobuf/timestamp.proto"]
    )
    file.syntax = "proto3"
    event = file.message_type.add(name="Event")
    event.field.append(_field("at", 1, F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp"))
    event.field.append(_field("n", 2, F.TYPE_INT32))
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Event"))

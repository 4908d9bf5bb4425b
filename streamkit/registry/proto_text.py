"""The .proto source of a compiled file descriptor: what the Protobuf codec registers when the
user gives a generated message class and no schema text. Pure functions.

Covers what protoc-generated proto2 and proto3 files declare for data: messages (nested),
enums, scalar / message / enum fields, `repeated`, `map<K, V>`, `oneof`, proto3 `optional`,
packages and imports. Options other than `packed` and services are left out (a registry
compares the data's shape, not them). Type names are written fully qualified (`.pkg.Msg`),
which every .proto parser accepts.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2

F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    F.TYPE_DOUBLE: "double",
    F.TYPE_FLOAT: "float",
    F.TYPE_INT64: "int64",
    F.TYPE_UINT64: "uint64",
    F.TYPE_INT32: "int32",
    F.TYPE_FIXED64: "fixed64",
    F.TYPE_FIXED32: "fixed32",
    F.TYPE_BOOL: "bool",
    F.TYPE_STRING: "string",
    F.TYPE_BYTES: "bytes",
    F.TYPE_UINT32: "uint32",
    F.TYPE_SFIXED32: "sfixed32",
    F.TYPE_SFIXED64: "sfixed64",
    F.TYPE_SINT32: "sint32",
    F.TYPE_SINT64: "sint64",
}


def proto_source(file: descriptor_pb2.FileDescriptorProto) -> str:
    syntax = file.syntax or "proto2"
    lines = [f'syntax = "{syntax}";']
    if file.package:
        lines.append(f"package {file.package};")
    lines += [f'import "{dep}";' for dep in file.dependency]
    for enum in file.enum_type:
        lines += _enum(enum, "")
    for message in file.message_type:
        lines += _message(message, "", syntax)
    return "\n".join(lines) + "\n"


def _enum(enum: descriptor_pb2.EnumDescriptorProto, indent: str) -> list[str]:
    lines = [f"{indent}enum {enum.name} {{"]
    lines += [f"{indent}  {v.name} = {v.number};" for v in enum.value]
    return [*lines, f"{indent}}}"]


def _type(field: descriptor_pb2.FieldDescriptorProto) -> str:
    if field.type in (F.TYPE_MESSAGE, F.TYPE_ENUM, F.TYPE_GROUP):
        return field.type_name
    return _SCALARS[field.type]


def _message(message: descriptor_pb2.DescriptorProto, indent: str, syntax: str) -> list[str]:
    inner = indent + "  "
    lines = [f"{indent}message {message.name} {{"]
    maps = {f".{nested.name}": nested for nested in message.nested_type if nested.options.map_entry}
    for enum in message.enum_type:
        lines += _enum(enum, inner)
    for nested in message.nested_type:
        if not nested.options.map_entry:
            lines += _message(nested, inner, syntax)
    real_oneofs: dict[int, list[str]] = {}
    for field in message.field:
        in_oneof = field.HasField("oneof_index") and not field.proto3_optional
        text = _field(field, maps, syntax)
        if in_oneof:
            real_oneofs.setdefault(field.oneof_index, []).append(text)
        else:
            lines.append(inner + text)
    for index, texts in real_oneofs.items():
        lines.append(f"{inner}oneof {message.oneof_decl[index].name} {{")
        lines += [f"{inner}  {text}" for text in texts]
        lines.append(f"{inner}}}")
    for reserved in message.reserved_range:
        lines.append(f"{inner}reserved {reserved.start} to {reserved.end - 1};")
    return [*lines, f"{indent}}}"]


def _field(
    field: descriptor_pb2.FieldDescriptorProto,
    maps: dict[str, descriptor_pb2.DescriptorProto],
    syntax: str,
) -> str:
    entry = next((m for suffix, m in maps.items() if field.type_name.endswith(suffix)), None)
    if field.label == F.LABEL_REPEATED and entry is not None:
        key, value = entry.field[0], entry.field[1]
        return f"map<{_type(key)}, {_type(value)}> {field.name} = {field.number};"
    label = ""
    if field.label == F.LABEL_REPEATED:
        label = "repeated "
    elif field.proto3_optional or (syntax == "proto2" and field.label == F.LABEL_OPTIONAL):
        label = "optional "
    elif field.label == F.LABEL_REQUIRED:
        label = "required "
    if field.HasField("oneof_index") and not field.proto3_optional:
        label = ""
    options = (
        " [packed = false]" if field.options.HasField("packed") and not field.options.packed else ""
    )
    return f"{label}{_type(field)} {field.name} = {field.number}{options};"

"""OpenAPI v2 as protobuf: the Swagger document ``openapiv2`` builds (as JSON) encoded as gnostic's
``openapi.v2.Document`` message, the body kube-apiserver answers ``GET /openapi/v2`` with for
``Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf``. client-go asks for it
(``OpenAPISchema``): kubectl's client-side validation reads it, for a ``kind: List`` among others.

The message types are built at import from a descriptor written here (no generated code, no protoc
step): the messages, field names and numbers of google/gnostic's ``openapiv2/OpenAPIv2.proto``
that a Kubernetes document uses. The encoding follows gnostic's ``ParseDocument``: JSON keys in
camelCase become the fields in snake_case (``$ref`` is ``_ref``), keys starting with ``x-`` become
``vendor_extension`` entries, maps become repeated ``Named*`` pairs, and free-form values
(``default``, ``enum``, ``example``, vendor extensions) become ``Any`` holding YAML.
"""
from __future__ import annotations

import functools
import re
from typing import Any

import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from ..errors import NetemuError

_PACKAGE = "openapi.v2"

# The parameter fields common to the query, path and header sub-schemas, numbered from ``first``.
_PRIMITIVE = ("type format items:PrimitivesItems collection_format default:Any maximum:double "
              "exclusive_maximum:bool minimum:double exclusive_minimum:bool max_length:int64 "
              "min_length:int64 pattern max_items:int64 min_items:int64 unique_items:bool *enum:Any "
              "multiple_of:double")


def _numbered(fields: str, first: int = 1) -> str:
    return " ".join(re.sub(r"^(\*?\w+)", rf"\1={n}", field) for n, field in enumerate(fields.split(), first))


# message -> its fields as ``name=number[:type]`` (type ``string`` unless named), ``*`` before a
# repeated field, ``|`` before a member of the message's one ``oneof`` (named ``oneof``).
_MESSAGES = {
    "AdditionalPropertiesItem": "|schema=1:Schema |boolean=2:bool",
    "Any": "yaml=2",
    "ApiKeySecurity": "type=1 name=2 in=3 description=4 *vendor_extension=5:NamedAny",
    "BodyParameter": "description=1 name=2 in=3 required=4:bool schema=5:Schema *vendor_extension=6:NamedAny",
    "Definitions": "*additional_properties=1:NamedSchema",
    "Document": "swagger=1 info=2:Info host=3 base_path=4 *schemes=5 *consumes=6 *produces=7 paths=8:Paths "
                "definitions=9:Definitions *security=12:SecurityRequirement "
                "security_definitions=13:SecurityDefinitions *tags=14:Tag external_docs=15:ExternalDocs "
                "*vendor_extension=16:NamedAny",
    "ExternalDocs": "description=1 url=2 *vendor_extension=3:NamedAny",
    "HeaderParameterSubSchema": "required=1:bool in=2 description=3 name=4 " + _numbered(_PRIMITIVE, 5)
                                + " *vendor_extension=22:NamedAny",
    "Info": "title=1 version=2 description=3 terms_of_service=4 *vendor_extension=7:NamedAny",
    "ItemsItem": "*schema=1:Schema",
    "JsonReference": "_ref=1 description=2",
    "NamedAny": "name=1 value=2:Any",
    "NamedPathItem": "name=1 value=2:PathItem",
    "NamedResponseValue": "name=1 value=2:ResponseValue",
    "NamedSchema": "name=1 value=2:Schema",
    "NamedSecurityDefinitionsItem": "name=1 value=2:SecurityDefinitionsItem",
    "NamedStringArray": "name=1 value=2:StringArray",
    "NonBodyParameter": "|header_parameter_sub_schema=1:HeaderParameterSubSchema "
                        "|query_parameter_sub_schema=3:QueryParameterSubSchema "
                        "|path_parameter_sub_schema=4:PathParameterSubSchema",
    "Operation": "*tags=1 summary=2 description=3 external_docs=4:ExternalDocs operation_id=5 *produces=6 "
                 "*consumes=7 *parameters=8:ParametersItem responses=9:Responses *schemes=10 deprecated=11:bool "
                 "*security=12:SecurityRequirement *vendor_extension=13:NamedAny",
    "Parameter": "|body_parameter=1:BodyParameter |non_body_parameter=2:NonBodyParameter",
    "ParametersItem": "|parameter=1:Parameter |json_reference=2:JsonReference",
    "PathItem": "_ref=1 get=2:Operation put=3:Operation post=4:Operation delete=5:Operation "
                "options=6:Operation head=7:Operation patch=8:Operation *parameters=9:ParametersItem "
                "*vendor_extension=10:NamedAny",
    "PathParameterSubSchema": "required=1:bool in=2 description=3 name=4 " + _numbered(_PRIMITIVE, 5)
                              + " *vendor_extension=22:NamedAny",
    "Paths": "*vendor_extension=1:NamedAny *path=2:NamedPathItem",
    "PrimitivesItems": _numbered(_PRIMITIVE) + " *vendor_extension=18:NamedAny",
    "Properties": "*additional_properties=1:NamedSchema",
    "QueryParameterSubSchema": "required=1:bool in=2 description=3 name=4 allow_empty_value=5:bool "
                               + _numbered(_PRIMITIVE, 6) + " *vendor_extension=23:NamedAny",
    "Response": "description=1 schema=2:SchemaItem *vendor_extension=5:NamedAny",
    "ResponseValue": "|response=1:Response |json_reference=2:JsonReference",
    "Responses": "*response_code=1:NamedResponseValue *vendor_extension=2:NamedAny",
    "Schema": "_ref=1 format=2 title=3 description=4 default=5:Any multiple_of=6:double maximum=7:double "
              "exclusive_maximum=8:bool minimum=9:double exclusive_minimum=10:bool max_length=11:int64 "
              "min_length=12:int64 pattern=13 max_items=14:int64 min_items=15:int64 unique_items=16:bool "
              "max_properties=17:int64 min_properties=18:int64 *required=19 *enum=20:Any "
              "additional_properties=21:AdditionalPropertiesItem type=22:TypeItem items=23:ItemsItem "
              "*all_of=24:Schema properties=25:Properties discriminator=26 read_only=27:bool "
              "external_docs=29:ExternalDocs example=30:Any *vendor_extension=31:NamedAny",
    "SchemaItem": "|schema=1:Schema",
    "SecurityDefinitions": "*additional_properties=1:NamedSecurityDefinitionsItem",
    "SecurityDefinitionsItem": "|api_key_security=2:ApiKeySecurity",
    "SecurityRequirement": "*additional_properties=1:NamedStringArray",
    "StringArray": "*value=1",
    "Tag": "name=1 description=2 external_docs=3:ExternalDocs *vendor_extension=4:NamedAny",
    "TypeItem": "*value=1",
}
_SCALARS = {"string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
            "bool": descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
            "double": descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE,
            "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64}
_FIELD = re.compile(r"^([*|]?)(\w+)=(\d+)(?::(\w+))?$")


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name="openapiv2/OpenAPIv2.proto", package=_PACKAGE,
                                              syntax="proto3")
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        for spec in fields.split():
            match = _FIELD.match(spec)
            if match is None:
                raise NetemuError(f"openapiv2_proto: bad field spec {spec!r} in {name}")
            mark, field_name, number, type_name = match.groups()
            field = message.field.add(name=field_name, number=int(number))
            field.label = (descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED if mark == "*"
                           else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
            type_name = type_name or "string"
            if type_name in _SCALARS:
                field.type = _SCALARS[type_name]
            else:
                field.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
                field.type_name = f".{_PACKAGE}.{type_name}"
            if mark == "|":
                if not message.oneof_decl:
                    message.oneof_decl.add(name="oneof")
                field.oneof_index = 0
    return file


@functools.cache
def message_classes() -> dict[str, type[Message]]:
    """The message classes by short name (``Document``, ``Schema``...), built once."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file_descriptor())
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
            for name in _MESSAGES}


def _snake(key: str) -> str:
    if key == "$ref":
        return "_ref"
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


def _any(message: Message, value: Any) -> Message:
    message.yaml = yaml.safe_dump(value, default_flow_style=False, allow_unicode=True)
    return message


def _named(repeated: Any, mapping: dict[str, Any], path: str) -> None:
    for name, value in mapping.items():
        entry = repeated.add(name=name)
        _fill(entry.value, value, f"{path}.{name}")


def _fill(message: Message, value: Any, path: str) -> Message:
    """``message`` filled from the JSON ``value`` the way gnostic reads it; a NetemuError naming
    ``path`` for a key the message has no field for."""
    message.SetInParent()  # an empty schema (``{}``) is still there, as in gnostic's encoding
    kind = message.DESCRIPTOR.name
    if kind == "Any":
        return _any(message, value)
    if kind in ("TypeItem", "StringArray"):
        message.value.extend(value if isinstance(value, list) else [value])
        return message
    if kind == "ItemsItem":
        for item in value if isinstance(value, list) else [value]:
            _fill(message.schema.add(), item, path)
        return message
    if kind == "AdditionalPropertiesItem":
        if isinstance(value, bool):
            message.boolean = value
        else:
            _fill(message.schema, value, path)
        return message
    if kind in ("Definitions", "Properties", "SecurityDefinitions", "SecurityRequirement"):
        _named(message.additional_properties, value, path)
        return message
    if kind == "Paths":
        _named(message.path, {k: v for k, v in value.items() if not k.startswith("x-")}, path)
        _extensions(message, value, path)
        return message
    if kind == "Responses":
        _named(message.response_code, {k: v for k, v in value.items() if not k.startswith("x-")}, path)
        _extensions(message, value, path)
        return message
    if kind in ("ParametersItem", "ResponseValue") and "$ref" in value:
        return _fill(message.json_reference, value, path)
    if kind in _ONEOF_CHOICE:
        return _fill(getattr(message, _ONEOF_CHOICE[kind](value)), value, path)
    return _fields(message, value, path)


# the one member of a oneof a JSON value fills, by the message holding the oneof
_ONEOF_CHOICE = {
    "ParametersItem": lambda value: "parameter",
    "Parameter": lambda value: "body_parameter" if value.get("in") == "body" else "non_body_parameter",
    "NonBodyParameter": lambda value: f"{_snake(value.get('in', 'query'))}_parameter_sub_schema",
    "ResponseValue": lambda value: "response",
    "SchemaItem": lambda value: "schema",
    "SecurityDefinitionsItem": lambda value: "api_key_security",
}


def _extensions(message: Message, value: dict[str, Any], path: str) -> None:
    for key, extension in value.items():
        if key.startswith("x-"):
            _any(message.vendor_extension.add(name=key).value, extension)


def _fields(message: Message, value: dict[str, Any], path: str) -> Message:
    fields = message.DESCRIPTOR.fields_by_name
    for key, item in value.items():
        if key.startswith("x-") and "vendor_extension" in fields:
            continue
        field = fields.get(_snake(key))
        if field is None:
            raise NetemuError(f"openapi v2 as protobuf: {path}.{key}: no field in {message.DESCRIPTOR.name}")
        where = f"{path}.{key}"
        if field.type != field.TYPE_MESSAGE:
            target = getattr(message, field.name)
            if field.is_repeated:
                target.extend(item)
            else:
                setattr(message, field.name, item)
        elif field.is_repeated:
            for element in item if isinstance(item, list) else [item]:
                _fill(getattr(message, field.name).add(), element, where)
        else:
            _fill(getattr(message, field.name), item, where)
    if "vendor_extension" in fields:
        _extensions(message, value, path)
    return message


def encode(document: dict[str, Any]) -> bytes:
    """The Swagger 2.0 ``document`` (as JSON decodes it) as an ``openapi.v2.Document``, serialized."""
    return _fill(message_classes()["Document"](), document, "").SerializeToString(deterministic=True)

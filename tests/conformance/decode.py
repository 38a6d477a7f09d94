#!/usr/bin/env python3
"""Decode serialized SkyWalking messages with the official generated stubs.

Usage: decode.py KIND FILE...

KIND names the message type (see KINDS). Each FILE holds one serialized message. For each
file, one JSON object is printed on its own line, in order: protobuf's canonical JSON mapping
with the official camelCase field names, enums by name, int64 as strings, and fields holding
default values included, so that every field can be compared.

A message carrying fields the official schema does not know is an error (exit status 1):
MessageToDict would otherwise drop them silently.
"""

import json
import sys

from google.protobuf import json_format

from skywalking.protocol.language_agent import Meter_pb2, Tracing_pb2
from skywalking.protocol.logging import Logging_pb2
from skywalking.protocol.management import Management_pb2

KINDS = {
    "segment": Tracing_pb2.SegmentObject,
    "segment_collection": Tracing_pb2.SegmentCollection,
    "instance_properties": Management_pb2.InstanceProperties,
    "instance_ping": Management_pb2.InstancePingPkg,
    "meter_data": Meter_pb2.MeterData,
    "log_data": Logging_pb2.LogData,
}


def to_dict(msg):
    # protobuf >= 5.26 renamed including_default_value_fields.
    try:
        return json_format.MessageToDict(
            msg,
            preserving_proto_field_name=False,
            always_print_fields_with_no_presence=True,
        )
    except TypeError:
        return json_format.MessageToDict(
            msg,
            preserving_proto_field_name=False,
            including_default_value_fields=True,
        )


def unknown_field_count(msg):
    try:
        from google.protobuf import unknown_fields

        return len(unknown_fields.UnknownFieldSet(msg))
    except ImportError:  # older runtimes
        return len(msg.UnknownFields())


def is_repeated(field):
    # FieldDescriptor.label is gone in protobuf 7; is_repeated replaced it.
    if hasattr(field, "is_repeated"):
        return field.is_repeated
    return field.label == field.LABEL_REPEATED


def find_unknown(msg, path):
    """Yields 'path: N unknown field(s)' for msg and every nested message."""
    count = unknown_field_count(msg)
    if count:
        yield f"{path or '<root>'}: {count} unknown field(s)"
    for field, value in msg.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        name = f"{path}.{field.json_name}" if path else field.json_name
        if is_repeated(field):
            for i, item in enumerate(value):
                yield from find_unknown(item, f"{name}[{i}]")
        else:
            yield from find_unknown(value, name)


def main(argv):
    if len(argv) < 2 or argv[1] not in KINDS:
        print(f"usage: {argv[0]} {{{'|'.join(KINDS)}}} FILE...", file=sys.stderr)
        return 2
    cls = KINDS[argv[1]]
    failed = False
    for path in argv[2:]:
        with open(path, "rb") as f:
            data = f.read()
        msg = cls()
        try:
            msg.ParseFromString(data)
        except Exception as e:  # DecodeError; the upb runtime raises its own subclass
            print(f"{path}: not a valid {cls.DESCRIPTOR.full_name}: {e}", file=sys.stderr)
            failed = True
            continue
        unknown = list(find_unknown(msg, ""))
        if unknown:
            print(
                f"{path}: {cls.DESCRIPTOR.full_name} has fields the official schema lacks: "
                + "; ".join(unknown),
                file=sys.stderr,
            )
            failed = True
            continue
        print(json.dumps(to_dict(msg), sort_keys=True))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

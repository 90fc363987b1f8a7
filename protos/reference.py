"""Writes docs/api.md, the API reference of avatar.v1, from the .proto files beside this script and their comments.

Run `python protos/reference.py` after editing a .proto; `--check` fails when docs/api.md is stale (scripts/test.sh
and a test run it). The output is generated: never edit docs/api.md by hand, edit the comments in the .proto files.

The public API (SessionService in session.proto, and every type it reaches) comes first; the internal services (LLM,
TTS, video, packager) and their shared types follow in a section of their own. The protos are compiled by the
pinned grpcio-tools (as protos/generate.py does) into a FileDescriptorSet with source info, which holds the comments.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = PROTO_ROOT / "avatar" / "v1"
OUTPUT = PROTO_ROOT.parent / "docs" / "api.md"
PACKAGE = "avatar.v1"
PUBLIC_FILE = "avatar/v1/session.proto"
# Internal files in pipeline order; any other file follows, sorted.
INTERNAL_ORDER = ("llm.proto", "tts.proto", "video.proto", "packager.proto", "media.proto")

# Field numbers of the descriptor messages, for SourceCodeInfo paths.
FILE_MESSAGE, FILE_ENUM, FILE_SERVICE = 4, 5, 6
MESSAGE_FIELD, MESSAGE_NESTED, MESSAGE_ENUM, MESSAGE_ONEOF = 2, 3, 4, 8
ENUM_VALUE = 2
SERVICE_METHOD = 2

FDP = descriptor_pb2.FieldDescriptorProto
SCALARS = {
    FDP.TYPE_DOUBLE: "double",
    FDP.TYPE_FLOAT: "float",
    FDP.TYPE_INT64: "int64",
    FDP.TYPE_UINT64: "uint64",
    FDP.TYPE_INT32: "int32",
    FDP.TYPE_FIXED64: "fixed64",
    FDP.TYPE_FIXED32: "fixed32",
    FDP.TYPE_BOOL: "bool",
    FDP.TYPE_STRING: "string",
    FDP.TYPE_BYTES: "bytes",
    FDP.TYPE_UINT32: "uint32",
    FDP.TYPE_SFIXED32: "sfixed32",
    FDP.TYPE_SFIXED64: "sfixed64",
    FDP.TYPE_SINT32: "sint32",
    FDP.TYPE_SINT64: "sint64",
}
WELL_KNOWN_DOCS = "https://protobuf.dev/reference/protobuf/google.protobuf/"


def compile_protos() -> descriptor_pb2.FileDescriptorSet:
    """Every avatar.v1 .proto file (and its imports), with comments, as the pinned protoc sees them."""
    from grpc_tools import protoc

    include = Path(protoc.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PACKAGE_DIR.glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "avatar.binpb"
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--descriptor_set_out={out}",
            "--include_source_info",
            "--include_imports",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


# -- the model -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Element:
    """A documented element: a service, method, message, field, oneof, enum or enum value."""

    kind: str
    name: str  # fully qualified, without the leading dot
    file: str
    comment: str
    proto: object


class Api:
    """The files of avatar.v1 with each element's comment, keyed by SourceCodeInfo path."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.files = {f.name: f for f in files.file if f.package == PACKAGE}
        self.comments: dict[tuple[str, tuple[int, ...]], str] = {}
        self.file_notes: dict[str, list[str]] = {}
        for f in self.files.values():
            notes: list[str] = []
            for location in f.source_code_info.location:
                path = tuple(location.path)
                text = _comment(location.leading_comments, location.trailing_comments)
                if text:
                    self.comments[(f.name, path)] = text
                if len(path) == 2 and path[0] in (FILE_MESSAGE, FILE_ENUM, FILE_SERVICE):
                    notes += [n for n in (_dedent(d) for d in location.leading_detached_comments) if n]
            self.file_notes[f.name] = notes
        self.messages: dict[str, tuple[str, tuple[int, ...], descriptor_pb2.DescriptorProto]] = {}
        self.enums: dict[str, tuple[str, tuple[int, ...], descriptor_pb2.EnumDescriptorProto]] = {}
        for f in self.files.values():
            for i, message in enumerate(f.message_type):
                self._index_message(f.name, f"{PACKAGE}.{message.name}", (FILE_MESSAGE, i), message)
            for i, enum in enumerate(f.enum_type):
                self.enums[f"{PACKAGE}.{enum.name}"] = (f.name, (FILE_ENUM, i), enum)

    def _index_message(self, file: str, name: str, path: tuple[int, ...], message) -> None:
        self.messages[name] = (file, path, message)
        for i, nested in enumerate(message.nested_type):
            self._index_message(file, f"{name}.{nested.name}", (*path, MESSAGE_NESTED, i), nested)
        for i, enum in enumerate(message.enum_type):
            self.enums[f"{name}.{enum.name}"] = (file, (*path, MESSAGE_ENUM, i), enum)

    def comment(self, file: str, path: tuple[int, ...]) -> str:
        return self.comments.get((file, path), "")

    def elements(self, file: str) -> Iterator[Element]:
        """Every element defined in `file`, in declaration order (map entries excluded)."""
        f = self.files[file]
        for i, service in enumerate(f.service):
            yield Element("service", f"{PACKAGE}.{service.name}", file, self.comment(file, (FILE_SERVICE, i)), service)
            for j, method in enumerate(service.method):
                path = (FILE_SERVICE, i, SERVICE_METHOD, j)
                yield Element("rpc", f"{PACKAGE}.{service.name}.{method.name}", file, self.comment(file, path), method)
        for name, (message_file, _, _) in self.messages.items():
            if message_file == file:
                yield from self.message_elements(name)
        for name, (enum_file, path, enum) in self.enums.items():
            if enum_file == file:
                yield from self._enum_elements(name, path, enum, file)

    def message_elements(self, name: str) -> Iterator[Element]:
        file, path, message = self.messages[name]
        if message.options.map_entry:
            return
        yield Element("message", name, file, self.comment(file, path), message)
        for k, oneof in enumerate(message.oneof_decl):
            if not _synthetic_oneof(message, k):
                comment = self.comment(file, (*path, MESSAGE_ONEOF, k))
                yield Element("oneof", f"{name}.{oneof.name}", file, comment, oneof)
        for j, field in enumerate(message.field):
            yield Element("field", f"{name}.{field.name}", file, self.comment(file, (*path, MESSAGE_FIELD, j)), field)

    def _enum_elements(self, name: str, path: tuple[int, ...], enum, file: str) -> Iterator[Element]:
        yield Element("enum", name, file, self.comment(file, path), enum)
        for j, value in enumerate(enum.value):
            yield Element("enum value", f"{name}.{value.name}", file, self.comment(file, (*path, ENUM_VALUE, j)), value)

    def public_types(self) -> list[str]:
        """Messages and enums the public services reach (their requests, responses and their fields' types,
        transitively), in declaration order: those of session.proto first, then the other files'."""
        reached: set[str] = set()
        pending = [
            t.lstrip(".")
            for service in self.files[PUBLIC_FILE].service
            for method in service.method
            for t in (method.input_type, method.output_type)
        ]
        pending += [name for name, (file, _, _) in self.messages.items() if file == PUBLIC_FILE]
        pending += [name for name, (file, _, _) in self.enums.items() if file == PUBLIC_FILE]
        while pending:
            name = pending.pop()
            if name in reached or (name not in self.messages and name not in self.enums):
                continue
            reached.add(name)
            if name in self.messages:
                message = self.messages[name][2]
                pending += [f.type_name.lstrip(".") for f in message.field if f.type_name]
                pending += [f"{name}.{n.name}" for n in message.nested_type]
        order = {file: i for i, file in enumerate(self.file_order())}
        declared = [*self.messages, *self.enums]
        return sorted(
            reached,
            key=lambda n: (order[self._file_of(n)], n in self.enums, declared.index(n)),
        )

    def public_elements(self) -> Iterator[Element]:
        """Every element of the public API: its services and RPCs, and every message, field, enum and value it
        reaches."""
        for element in self.elements(PUBLIC_FILE):
            if element.kind in ("service", "rpc"):
                yield element
        for name in self.public_types():
            if name in self.messages:
                yield from self.message_elements(name)
            else:
                file, path, enum = self.enums[name]
                yield from self._enum_elements(name, path, enum, file)

    def _file_of(self, name: str) -> str:
        return self.messages[name][0] if name in self.messages else self.enums[name][0]

    def file_order(self) -> list[str]:
        internal = [f"avatar/v1/{name}" for name in INTERNAL_ORDER if f"avatar/v1/{name}" in self.files]
        others = sorted(set(self.files) - {PUBLIC_FILE, *internal})
        return [PUBLIC_FILE, *internal, *others]


def _synthetic_oneof(message: descriptor_pb2.DescriptorProto, index: int) -> bool:
    """A proto3 `optional` field's oneof, which is no part of the API's shape."""
    return any(f.proto3_optional and f.HasField("oneof_index") and f.oneof_index == index for f in message.field)


def _dedent(text: str) -> str:
    lines = [line[1:] if line.startswith(" ") else line for line in text.split("\n")]
    return "\n".join(lines).strip()


def _comment(leading: str, trailing: str) -> str:
    return "\n\n".join(part for part in (_dedent(leading), _dedent(trailing)) if part)


# -- Markdown --------------------------------------------------------------------------------------------------------


def _escape(text: str, table: bool = False) -> str:
    """Comment text as Markdown: code spans kept, everything else safe from HTML and emphasis."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            part = part.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("*", r"\*")
        if table:
            part = part.replace("|", r"\|")
        out.append(part)
    return "".join(out)


def _paragraphs(text: str) -> list[str]:
    """A comment's paragraphs, each on one line (comments are wrapped by hand at the source's width)."""
    return [" ".join(line.strip() for line in block.split("\n")) for block in re.split(r"\n\s*\n", text) if block]


def _cell(text: str) -> str:
    return "<br><br>".join(_escape(p, table=True) for p in _paragraphs(text))


def _anchor(name: str) -> str:
    return name.replace(".", "-").lower()


class Writer:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.lines: list[str] = []
        self.documented: set[str] = set()
        self.depth = 3  # heading level of a service; its types are one deeper

    def text(self) -> str:
        return "\n".join(self.lines).rstrip("\n") + "\n"

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def prose(self, text: str) -> None:
        for paragraph in _paragraphs(text):
            self.add(_escape(paragraph), "")

    def type_ref(self, type_name: str) -> str:
        name = type_name.lstrip(".")
        short = name.removeprefix(f"{PACKAGE}.")
        if name in self.api.messages or name in self.api.enums:
            return f"[`{short}`](#{_anchor(name)})"
        if name.startswith("google.protobuf."):
            return f"[`{name}`]({WELL_KNOWN_DOCS}#{name.rsplit('.', 1)[1].lower()})"
        return f"`{name}`"

    def field_type(self, field: descriptor_pb2.FieldDescriptorProto) -> str:
        if field.type_name:
            entry = self.api.messages.get(field.type_name.lstrip("."))
            if entry is not None and entry[2].options.map_entry:
                key, value = entry[2].field
                return f"map&lt;{self.field_type(key)}, {self.field_type(value)}&gt;"
            return self.type_ref(field.type_name)
        return f"`{SCALARS[field.type]}`"

    def label(self, message: descriptor_pb2.DescriptorProto, field: descriptor_pb2.FieldDescriptorProto) -> str:
        if field.label == FDP.LABEL_REPEATED:
            entry = self.api.messages.get(field.type_name.lstrip(".")) if field.type_name else None
            return "" if entry is not None and entry[2].options.map_entry else "repeated"
        if field.proto3_optional:
            return "optional"
        if field.HasField("oneof_index"):
            return f"oneof `{message.oneof_decl[field.oneof_index].name}`"
        return ""

    def service(self, file: str, index: int) -> None:
        api = self.api
        service = api.files[file].service[index]
        self.add(f'<a id="{_anchor(f"{PACKAGE}.{service.name}")}"></a>', "", f"{'#' * self.depth} `{service.name}`", "")
        self.prose(api.comment(file, (FILE_SERVICE, index)))
        self.add("| RPC | Request | Response | Kind | Description |", "| --- | --- | --- | --- | --- |")
        for j, method in enumerate(service.method):
            request = ("stream " if method.client_streaming else "") + self.type_ref(method.input_type)
            response = ("stream " if method.server_streaming else "") + self.type_ref(method.output_type)
            kind = {
                (False, False): "unary",
                (False, True): "server streaming",
                (True, False): "client streaming",
                (True, True): "bidirectional streaming",
            }[(method.client_streaming, method.server_streaming)]
            comment = _cell(api.comment(file, (FILE_SERVICE, index, SERVICE_METHOD, j)))
            self.add(f"| `{method.name}` | {request} | {response} | {kind} | {comment} |")
        self.add("")

    def message(self, name: str) -> None:
        api = self.api
        file, path, message = api.messages[name]
        if message.options.map_entry or name in self.documented:
            return
        self.documented.add(name)
        short = name.removeprefix(f"{PACKAGE}.")
        self.add(f'<a id="{_anchor(name)}"></a>', "", f"{'#' * (self.depth + 1)} `{short}`", "")
        self.prose(api.comment(file, path))
        if message.field:
            self.add("| # | Field | Type | Label | Description |", "| --: | --- | --- | --- | --- |")
            for j, field in enumerate(message.field):
                comment = _cell(api.comment(file, (*path, MESSAGE_FIELD, j)))
                self.add(
                    f"| {field.number} | `{field.name}` | {self.field_type(field)} | "
                    f"{self.label(message, field)} | {comment} |"
                )
            self.add("")
        else:
            self.add("No fields.", "")
        for k, oneof in enumerate(message.oneof_decl):
            comment = api.comment(file, (*path, MESSAGE_ONEOF, k))
            if comment and not _synthetic_oneof(message, k):
                self.add(f"**Oneof `{oneof.name}`.** {_escape(' '.join(_paragraphs(comment)))}", "")
        reserved = [
            str(r.start) if r.end - 1 == r.start else f"{r.start} to {r.end - 1}" for r in message.reserved_range
        ] + [f'"{n}"' for n in message.reserved_name]
        if reserved:
            self.add(f"Reserved (never to be reused): {', '.join(reserved)}.", "")

    def enum(self, name: str) -> None:
        api = self.api
        file, path, enum = api.enums[name]
        if name in self.documented:
            return
        self.documented.add(name)
        short = name.removeprefix(f"{PACKAGE}.")
        self.add(f'<a id="{_anchor(name)}"></a>', "", f"{'#' * (self.depth + 1)} `{short}`", "")
        self.prose(api.comment(file, path))
        self.add("| Number | Value | Description |", "| --: | --- | --- |")
        for j, value in enumerate(enum.value):
            comment = _cell(api.comment(file, (*path, ENUM_VALUE, j)))
            self.add(f"| {value.number} | `{value.name}` | {comment} |")
        self.add("")
        reserved = [str(r.start) if r.end == r.start else f"{r.start} to {r.end}" for r in enum.reserved_range] + [
            f'"{n}"' for n in enum.reserved_name
        ]
        if reserved:
            self.add(f"Reserved (never to be reused): {', '.join(reserved)}.", "")

    def types(self, names: Iterable[str]) -> None:
        for name in names:
            if name in self.api.messages:
                self.message(name)
            else:
                self.enum(name)

    def file_types(self, file: str) -> list[str]:
        """Top-level and nested messages and enums of `file`, messages first, in declaration order."""
        return [n for n, (f, _, _) in self.api.messages.items() if f == file] + [
            n for n, (f, _, _) in self.api.enums.items() if f == file
        ]


def render(api: Api) -> str:
    w = Writer(api)
    public = api.public_types()
    internal_files = api.file_order()[1:]
    w.add(
        "# avatar.v1 API reference",
        "",
        "<!-- Generated by protos/reference.py from the comments in protos/avatar/v1/*.proto: do not edit by hand. "
        "Run `.venv/bin/python protos/reference.py` after editing a .proto. -->",
        "",
        f"Package `{PACKAGE}`. The public API is `SessionService`: what browsers (through gRPC-Web and the gateway) "
        "and other backends call. The internal services connect the stack's own processes; the gateway does not "
        "publish them. Media times are microseconds of the session clock (media time 0 is the session's first frame). "
        "Within `avatar.v1`, RPCs, messages, fields and enum values are only ever added, never renumbered, retyped, "
        "renamed or removed: `buf breaking` against the release baseline `protos/avatar-v1.binpb` checks it (see "
        "`protos/README.md`).",
        "",
        "## Contents",
        "",
        f"- [Public API: `{PUBLIC_FILE}`](#public-api)",
    )
    for service in api.files[PUBLIC_FILE].service:
        w.add(f"  - [`{service.name}`](#{_anchor(f'{PACKAGE}.{service.name}')})")
    w.add("- [Internal services](#internal-services)")
    for file in internal_files:
        w.add(f"  - [`{file}`](#{_anchor(file.replace('/', '.'))})")
        for service in api.files[file].service:
            w.add(f"    - [`{service.name}`](#{_anchor(f'{PACKAGE}.{service.name}')})")
    w.add("", '<a id="public-api"></a>', "", f"## Public API: `{PUBLIC_FILE}`", "")
    for note in api.file_notes[PUBLIC_FILE]:
        w.prose(note)
    for i in range(len(api.files[PUBLIC_FILE].service)):
        w.service(PUBLIC_FILE, i)
    w.add("### Messages", "")
    w.types(n for n in public if n in api.messages)
    w.add("### Enums", "")
    w.types(n for n in public if n in api.enums)
    w.add(
        '<a id="internal-services"></a>',
        "",
        "## Internal services",
        "",
        "Between the stack's processes: the session service drives one long-lived stream per session to each. Not "
        "published by the gateway; a backend never calls them.",
        "",
    )
    w.depth = 4
    for file in internal_files:
        w.add(f'<a id="{_anchor(file.replace("/", "."))}"></a>', "", f"### `{file}`", "")
        for note in api.file_notes[file]:
            w.prose(note)
        for i in range(len(api.files[file].service)):
            w.service(file, i)
        names = w.file_types(file)
        shared = [n for n in names if n in w.documented]
        if shared:
            refs = ", ".join(w.type_ref(n) for n in shared)
            w.add(f"Also defined here, documented with the public API: {refs}.", "")
        w.types(n for n in names if n not in w.documented)
    return w.text()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if docs/api.md differs from the .proto files")
    args = parser.parse_args()
    text = render(Api(compile_protos()))
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is stale: run python protos/reference.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

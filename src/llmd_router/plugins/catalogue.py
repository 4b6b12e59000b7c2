"""The catalogue of ``docs/plugins.md``, written from the registry, so it cannot drift.

``python -m llmd_router.plugins.catalogue docs/plugins.md`` rewrites the part of the file between
the two markers (the guide above them is written by hand); a test checks that the committed
file holds what this renders.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgspec

from llmd_router.framework.kinds import kinds_of_class
from llmd_router.plugins.builtin import builtin_registry

if TYPE_CHECKING:
    from llmd_router.framework import PluginType, Registry

__all__ = ["BEGIN", "END", "generated_part", "render_catalogue", "splice"]

_SECTIONS = (
    "parser",
    "profile handler",
    "decider",
    "filter",
    "scorer",
    "picker",
    "data producer",
    "admitter",
    "saturation detector",
    "data source",
    "extractor",
    "discovery plugin",
)


def _kinds(cls: type) -> list[str]:
    return [kind.label for kind in kinds_of_class(cls)]


def _default(field: msgspec.structs.FieldInfo) -> str:
    if field.required:
        return "required"
    value: Any = field.default
    if value is msgspec.NODEFAULT:
        value = field.default_factory()
    if value is None:
        return "unset"
    return f"`{msgspec.json.encode(msgspec.to_builtins(value)).decode()}`"


def _params(entry: PluginType) -> str:
    params = entry.params
    try:
        fields = msgspec.structs.fields(params)
    except TypeError:
        return "—"
    if not fields:
        return "none"
    return ", ".join(f"`{f.encode_name}` ({_default(f)})" for f in fields)


def _summary(entry: PluginType) -> str:
    first = entry.doc.split("\n\n")[0] if entry.doc else ""
    return " ".join(first.split()).replace("``", "`").replace("|", "\\|")


def _folder(entry: PluginType) -> str:
    module = entry.cls.__module__.removeprefix("llmd_router.plugins.")
    return "../src/llmd_router/plugins/" + module.replace(".", "/") + "/README.md"


BEGIN: Final = "<!-- catalogue: python -m llmd_router.plugins.catalogue docs/plugins.md -->"
END: Final = "<!-- end of catalogue -->"


def render_catalogue(registry: Registry) -> str:
    entries = [t for t in registry.types() if t.replaced_by is None]
    aliases: dict[str, list[str]] = {}
    for t in registry.types():
        if t.replaced_by is not None:
            aliases.setdefault(t.replaced_by, []).append(t.name)
    lines = [
        "## The catalogue",
        "",
        "Generated from the registry; do not edit by hand. Each plugin's README (linked) gives its",
        "formula and an example. Type names, parameters and defaults are llm-d's. Parameters are",
        "written in camelCase. Alpha plugins need `--allow-experimental-plugins`.",
        "",
    ]
    placed: set[str] = set()
    for section in _SECTIONS:
        members = [e for e in entries if e.name not in placed and section in _kinds(e.cls)]
        if not members:
            continue
        lines += [f"### {section.capitalize()}s", ""]
        lines += [
            "| Type | Also | Stability | Parameters (default) | What it does |",
            "|---|---|---|---|---|",
        ]
        for entry in members:
            placed.add(entry.name)
            also = [k for k in _kinds(entry.cls) if k != section]
            also += [f"alias `{a}`" for a in aliases.get(entry.name, [])]
            lines.append(
                f"| [`{entry.name}`]({_folder(entry)}) | {', '.join(also) or '—'} | "
                f"{entry.stability.value} | {_params(entry)} | {_summary(entry)} |"
            )
        lines.append("")
    lines += [
        "### Not available in this version",
        "",
        "Naming one of these in a configuration is an error that gives the reason and lists the",
        "available types.",
        "",
        "| Type | Why |",
        "|---|---|",
    ]
    lines += [f"| `{name}` | {reason} |" for name, reason in registry.missing().items()]
    return "\n".join(lines) + "\n"


def generated_part(document: str) -> str:
    """What stands between the markers of ``document`` (ValueError if they are missing)."""
    start = document.index(BEGIN) + len(BEGIN)
    return document[start : document.index(END, start)].strip("\n") + "\n"


def splice(document: str, catalogue: str) -> str:
    """``document`` with ``catalogue`` between its markers."""
    head = document[: document.index(BEGIN) + len(BEGIN)]
    tail = document[document.index(END) :]
    return f"{head}\n{catalogue.rstrip()}\n{tail}"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m llmd_router.plugins.catalogue docs/plugins.md\n")
        return 2
    path = Path(argv[0])
    path.write_text(splice(path.read_text(), render_catalogue(builtin_registry())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

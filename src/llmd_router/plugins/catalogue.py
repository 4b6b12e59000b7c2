"""``docs/plugins.md``, written from the registry, so the catalogue cannot drift from the code.

Run ``python -m llmd_router.plugins.catalogue > docs/plugins.md``; a test checks that
the committed file is what this prints.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import msgspec

from llmd_router.framework.kinds import kinds_of_class
from llmd_router.plugins.builtin import builtin_registry

if TYPE_CHECKING:
    from llmd_router.framework import PluginType, Registry

__all__ = ["render_catalogue"]

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


def render_catalogue(registry: Registry) -> str:
    entries = [t for t in registry.types() if t.replaced_by is None]
    aliases: dict[str, list[str]] = {}
    for t in registry.types():
        if t.replaced_by is not None:
            aliases.setdefault(t.replaced_by, []).append(t.name)
    lines = [
        "# Plugin catalogue",
        "",
        "Generated from the registry by `python -m llmd_router.plugins.catalogue`;",
        "do not edit by hand. Each plugin's README (linked) gives its formula and an example.",
        "Type names, parameters and defaults are llm-d's. Parameters are written in camelCase.",
        "Alpha plugins need `--allow-experimental-plugins`.",
        "",
    ]
    placed: set[str] = set()
    for section in _SECTIONS:
        members = [e for e in entries if e.name not in placed and section in _kinds(e.cls)]
        if not members:
            continue
        lines += [f"## {section.capitalize()}s", ""]
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
        "## Not available in this version",
        "",
        "Naming one of these in a configuration is an error that gives the reason and lists the",
        "available types.",
        "",
        "| Type | Why |",
        "|---|---|",
    ]
    lines += [f"| `{name}` | {reason} |" for name, reason in registry.missing().items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_catalogue(builtin_registry()))

"""docs/plugins.md is generated from the registry; it must match what the code registers."""

from __future__ import annotations

from pathlib import Path

from llmd_router.plugins.builtin import builtin_registry
from llmd_router.plugins.catalogue import generated_part, render_catalogue

DOC = Path(__file__).parents[3] / "docs" / "plugins.md"


def test_docs_plugins_md_is_current():
    expected = render_catalogue(builtin_registry())
    assert generated_part(DOC.read_text()) == expected, (
        "docs/plugins.md is stale: python -m llmd_router.plugins.catalogue docs/plugins.md"
    )


def test_every_type_and_every_missing_type_is_in_the_catalogue():
    registry = builtin_registry()
    text = render_catalogue(registry)
    for entry in registry.types():
        assert f"`{entry.name}`" in text
    for name in registry.missing():
        assert f"| `{name}` |" in text


def test_the_readme_lists_every_type_not_available_yet():
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    missing = [name for name in builtin_registry().missing() if f"`{name}`" not in readme]
    assert not missing, f"README.md does not list: {missing}"

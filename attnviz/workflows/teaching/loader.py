"""Reading the teaching content from the TOML files beside this module.

The files (their format is described in ``README.md`` beside them):

* ``guides/<kind>.toml``: one :class:`~attnviz.workflows.teaching.records.ModuleGuide` per
  attention kind of :data:`attnviz.layers.ATTENTION_REGISTRY`;
* ``diagrams.toml``: the header and the node styles shared by the guides' data-flow diagrams;
* ``insertion_patterns.toml``: the :class:`~attnviz.workflows.teaching.records.InsertionPattern`
  list.

They are found from this package's folder (``Path(__file__).parent``), so the app finds them in a
checkout. Each folder is read once (cached). A missing file or key, an unknown key, a value of the
wrong type, an unknown module kind or an unknown node style raises :class:`ValueError` with the
file and the key in its message.

Text rules: prose (``what_it_computes``, ``what_the_map_means``, ``explanation``) is wrapped for
reading and unwrapped here: the lines of a paragraph are joined with a space, and a blank line
starts a new paragraph. The lines of a ``formula`` are joined with a space (LaTeX reads it the
same). ``code`` is kept as written. A ``data_flow`` gets the shared header after its first line,
and each ``[class=NAME`` becomes ``[`` plus the attributes of style NAME.
"""

from __future__ import annotations

import functools
import re
import tomllib
from pathlib import Path
from typing import Any

from attnviz.layers import ATTENTION_REGISTRY
from attnviz.layers.zoo_net import zoo_name
from attnviz.workflows.teaching.records import InsertionPattern, ModuleGuide, Paper

__all__ = ["DATA_DIR", "load_insertion_patterns", "load_module_guides"]

#: The folder that holds ``guides/``, ``diagrams.toml`` and ``insertion_patterns.toml``.
DATA_DIR = Path(__file__).parent

# Expected keys and their types, per table.
_GUIDE_KEYS: dict[str, type] = {
    "kind": str,
    "short": str,
    "title": str,
    "paper": dict,
    "formula": str,
    "what_it_computes": str,
    "what_the_map_means": str,
    "data_flow": str,
}
_PAPER_KEYS: dict[str, type] = {"title": str, "year": int, "link": str}
_PATTERN_KEYS: dict[str, type] = {"key": str, "title": str, "explanation": str, "code": str}
_DIAGRAM_KEYS: dict[str, type] = {"header": str, "styles": dict}

_TYPE_NAMES = {str: "a non-empty string", int: "an integer", dict: "a table", list: "an array of tables"}

# A node's style reference: ``[class=NAME`` at the start of its attribute list.
_CLASS = re.compile(r"\[class=(\w+)")


# --------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------


def _read(path: Path) -> dict[str, Any]:
    """The parsed TOML file at ``path``; a missing or malformed file is a ValueError naming it."""
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ValueError(f"{path}: the teaching data file is missing") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from None


def _checked(table: dict[str, Any], keys: dict[str, type], path: Path, prefix: str = "") -> dict[str, Any]:
    """``table`` once every key of ``keys`` is present with its type and no other key is.

    Args:
        table: a parsed TOML table.
        keys: key -> expected type (strings must also be non-empty).
        path: the file, for the messages.
        prefix: the table's dotted name in the file (``"paper."``), for the messages.

    Raises:
        ValueError: a missing key, an unknown key, or a value of the wrong type.
    """
    for key, kind in keys.items():
        if key not in table:
            raise ValueError(f"{path}: missing key '{prefix}{key}'")
        value = table[key]
        wrong = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        if wrong or (kind is str and not value.strip()):
            raise ValueError(f"{path}: key '{prefix}{key}' must be {_TYPE_NAMES[kind]}, got {value!r}")
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise ValueError(f"{path}: unknown key '{prefix}{unknown[0]}'; expected keys: {', '.join(keys)}")
    return table


# --------------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------------


def _prose(text: str) -> str:
    """Wrapped prose unwrapped: a paragraph's lines joined with a space, paragraphs by a blank line."""
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines() if line.strip()) for p in paragraphs)


def _formula(text: str) -> str:
    """A LaTeX formula's lines joined with a space."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _diagram(text: str, kind: str, header: tuple[str, ...], styles: dict[str, str], path: Path) -> str:
    """A guide's ``data_flow`` with the shared header inserted and its node styles expanded.

    Raises:
        ValueError: not a ``digraph <kind> { ... }``, or a node style that ``diagrams.toml`` lacks.
    """
    lines = text.strip().splitlines()
    if lines[0].strip() != f"digraph {kind} {{" or lines[-1].strip() != "}":
        raise ValueError(
            f"{path}: key 'data_flow' must be 'digraph {kind} {{ ... }}', starting with that line"
        )

    def expand(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in styles:
            raise ValueError(
                f"{path}: key 'data_flow' uses the unknown node class {name!r}; "
                f"diagrams.toml has: {', '.join(styles)}"
            )
        return "[" + styles[name]

    return "\n".join([lines[0], *header, *(_CLASS.sub(expand, line) for line in lines[1:])])


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


@functools.cache
def _diagram_style(path: Path) -> tuple[tuple[str, ...], dict[str, str]]:
    """``diagrams.toml``: the header's lines and ``{style name: DOT attributes}``."""
    data = _checked(_read(path), _DIAGRAM_KEYS, path)
    styles: dict[str, str] = {}
    for name, attributes in data["styles"].items():
        if not isinstance(attributes, str) or not attributes.strip():
            raise ValueError(f"{path}: key 'styles.{name}' must be {_TYPE_NAMES[str]}, got {attributes!r}")
        styles[name] = attributes.strip()
    header = tuple(line.rstrip() for line in data["header"].splitlines() if line.strip())
    return header, styles


def _guide(path: Path, header: tuple[str, ...], styles: dict[str, str]) -> ModuleGuide:
    """The guide in ``guides/<kind>.toml``."""
    data = _checked(_read(path), _GUIDE_KEYS, path)
    kind = data["kind"]
    if kind not in ATTENTION_REGISTRY:
        known = ", ".join(ATTENTION_REGISTRY)
        raise ValueError(f"{path}: key 'kind' is the unknown module kind {kind!r}; known kinds: {known}")
    if kind != path.stem:
        raise ValueError(
            f"{path}: key 'kind' is {kind!r} but the file is named {path.name}; name it {kind}.toml"
        )
    paper = _checked(data["paper"], _PAPER_KEYS, path, "paper.")
    return ModuleGuide(
        kind=kind,
        short=data["short"].strip(),
        title=data["title"].strip(),
        paper=Paper(paper["title"].strip(), paper["year"], paper["link"].strip()),
        formula=_formula(data["formula"]),
        what_it_computes=_prose(data["what_it_computes"]),
        what_the_map_means=_prose(data["what_the_map_means"]),
        data_flow=_diagram(data["data_flow"], kind, header, styles, path),
        zoo_model=zoo_name(kind),
    )


@functools.cache
def _guides(data_dir: Path) -> tuple[ModuleGuide, ...]:
    """Every guide in ``data_dir/guides``, in the registry's order."""
    header, styles = _diagram_style(data_dir / "diagrams.toml")
    paths = sorted((data_dir / "guides").glob("*.toml"))
    if not paths:
        raise ValueError(f"{data_dir / 'guides'}: no guide files (<kind>.toml)")
    found = {guide.kind: guide for guide in (_guide(path, header, styles) for path in paths)}
    return tuple(found[kind] for kind in ATTENTION_REGISTRY if kind in found)


def load_module_guides(data_dir: Path = DATA_DIR) -> dict[str, ModuleGuide]:
    """The module guides: attention kind -> its guide, in the registry's order.

    Args:
        data_dir: the folder with ``guides/`` and ``diagrams.toml`` (read once per folder).

    Returns:
        ``{kind: ModuleGuide}``, a new dict on each call (the guides themselves are frozen).

    Raises:
        ValueError: a missing or malformed file, or a missing, unknown or ill-typed key (the
            message names the file and the key).
    """
    return {guide.kind: guide for guide in _guides(Path(data_dir))}


@functools.cache
def _patterns(path: Path) -> tuple[InsertionPattern, ...]:
    """The patterns of ``insertion_patterns.toml``, in the file's order."""
    data = _checked(_read(path), {"patterns": list}, path)
    patterns: list[InsertionPattern] = []
    for i, table in enumerate(data["patterns"]):
        where = f"patterns[{i}]."
        if not isinstance(table, dict):
            raise ValueError(f"{path}: key '{where[:-1]}' must be a table ([[patterns]]), got {table!r}")
        table = _checked(table, _PATTERN_KEYS, path, where)
        if any(p.key == table["key"] for p in patterns):
            raise ValueError(f"{path}: key '{where}key' repeats the pattern {table['key']!r}")
        patterns.append(
            InsertionPattern(
                key=table["key"].strip(),
                title=table["title"].strip(),
                explanation=_prose(table["explanation"]),
                code=table["code"],
            )
        )
    return tuple(patterns)


def load_insertion_patterns(data_dir: Path = DATA_DIR) -> tuple[InsertionPattern, ...]:
    """The insertion patterns of ``data_dir/insertion_patterns.toml`` (read once per folder).

    Raises:
        ValueError: a missing or malformed file, or a missing, unknown or ill-typed key (the
            message names the file and the key).
    """
    return _patterns(Path(data_dir) / "insertion_patterns.toml")

"""MkDocs hook: the reference pages are generated from the code at every build, so they cannot drift.

- ``reference/cli/*.md``: one page per ``edge-export`` command, from its click definition (help text,
  usage, every option's help record, epilog). A command added to ``LAZY_COMMANDS`` or the group gets
  a page, and the nav lists it, without touching the docs.
- ``reference/exit-codes.md``: the table the CLI prints (``EXIT_CODES_HELP``).
- ``reference/recipes.md``: the recipe x target matrix of the installed registry (``edge-export recipes``)
  and the LLM recipes (``edge_export/llm/recipes/*.toml``).
- ``reference/schemas/*.md``: every ``edge_export/schemas/*.schema.json``, field by field.

Only click and the light registry modules are imported: no toolchain, so the build stays fast.
"""

from __future__ import annotations

import html
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import click

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "edge_export" / "schemas"
LLM_RECIPES = ROOT / "edge_export" / "llm" / "recipes"
CLI_DIR, SCHEMA_DIR = "reference/cli", "reference/schemas"
RECIPE_ORDER = ["int8", "int4", "fp32", "fp16", "int8-dynamic", "int8-static", "int8-weight", "int4-weight", "8da4w",
                "palettize4"]


# --- commands --------------------------------------------------------------------------------

def _cell(text: str) -> str:
    """Text safe inside a markdown table cell (pipes, angle brackets, line breaks)."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ").strip()


def _code_cell(text: str) -> str:
    """Code inside a table cell: a backtick span would show an escaped pipe as ``\\|``, so HTML."""
    return "<code>" + html.escape(text).replace("|", "&#124;") + "</code>"


def _help_markdown(text: str) -> str:
    """click help text as markdown: paragraphs stay paragraphs; a ``\\b`` block (click's "do not
    rewrap") is preformatted, as the terminal shows it."""
    blocks = []
    for para in re.split(r"\n\s*\n", click.unstyle(text).strip()):
        if para.lstrip().startswith("\b"):
            lines = para.lstrip().split("\n")[1:]
            blocks.append("```text\n" + "\n".join(lines) + "\n```")
        else:
            blocks.append(" ".join(line.strip() for line in para.splitlines()))
    return "\n\n".join(blocks)


def commands() -> list[tuple[str, click.Command]]:
    """("edge-export", the group) then every subcommand by name, lazily-loaded ones included."""
    from edge_export.cli.main import cli

    ctx = click.Context(cli, info_name="edge-export", **cli.context_settings)
    return [("edge-export", cli)] + [(f"edge-export {n}", cli.get_command(ctx, n)) for n in cli.list_commands(ctx)]


def command_page(name: str, command: click.Command) -> str:
    """One command's reference page: what ``--help`` says, with the options as a table."""
    from edge_export.cli.main import cli

    # the group's context settings (``-h``, the 100-column help) reach every subcommand, as on the terminal
    root = click.Context(cli, info_name="edge-export", **cli.context_settings)
    ctx = root if command is cli else click.Context(command, info_name=name.split()[-1], parent=root)
    formatter = ctx.make_formatter()
    command.format_usage(ctx, formatter)
    lines = [f"# `{name}`", "", "*Generated from the command's click definition at build time.*", "",
             _help_markdown(command.help or ""), "", "```text", formatter.getvalue().rstrip(), "```", ""]
    arguments = [p for p in command.get_params(ctx) if isinstance(p, click.Argument)]
    if arguments:
        lines += ["## Arguments", "", "| argument | required | repeatable |", "|---|---|---|"]
        yes = {True: "yes", False: "no"}
        lines += [f"| {_code_cell(p.make_metavar(ctx))} | {yes[p.required]} | {yes[p.nargs == -1]} |"
                  for p in arguments]
        lines.append("")
    options = [r for p in command.get_params(ctx) if isinstance(p, click.Option) and (r := p.get_help_record(ctx))]
    if options:
        lines += ["## Options", "", "| option | description |", "|---|---|"]
        lines += [f"| {_code_cell(opts)} | {_cell(click.unstyle(text))} |" for opts, text in options]
        lines.append("")
    if isinstance(command, click.Group):
        lines += ["## Commands", "", "| command | what it does |", "|---|---|"]
        for sub, cmd in commands()[1:]:
            lines.append(f"| [`{sub}`]({_slug(sub)}.md) | {_cell(cmd.get_short_help_str(200))} |")
        lines.append("")
    if command.epilog:
        lines += [_help_markdown(command.epilog), ""]
    return "\n".join(lines)


def _slug(name: str) -> str:
    return name.split()[-1] if " " in name else "index"


# --- exit codes ------------------------------------------------------------------------------

def exit_codes() -> list[tuple[int, str]]:
    """(code, meaning) as the CLI's help prints them: the one list users see."""
    from edge_export.cli.main import EXIT_CODES_HELP

    return [(int(m[1]), m[2].strip()) for m in re.finditer(r"^\s+(\d+)\s+(.+)$", EXIT_CODES_HELP, re.M)]


def exit_codes_page() -> str:
    lines = ["# Exit codes", "", "*Generated from the CLI's own exit-code help (`edge_export/cli/main.py`); "
             "`edge_export/errors.py` maps every exception to one of them.*", "",
             "| code | meaning |", "|---|---|"]
    return "\n".join(lines + [f"| {code} | {_cell(text)} |" for code, text in exit_codes()]) + "\n"


# --- recipes ---------------------------------------------------------------------------------

def recipes_page() -> str:
    """The registry's recipe x target matrix (what ``edge-export recipes --json`` prints)."""
    from edge_export.build.exporter import target_names
    from edge_export.cli.summary import recipe_matrix

    matrix, targets = recipe_matrix(), target_names()
    lines = ["# Recipes", "", "*Generated at build time from the recipe registry (`edge-export recipes --json`) "
             "and `edge_export/llm/recipes/*.toml`.*", "",
             "## Model recipes (`edge-export --recipe`)", "",
             "A supported cell gives the recipe's summary; a refused one the reason, prefixed with ⛔.", "",
             "| recipe | " + " | ".join(targets) + " |", "|---" * (len(targets) + 1) + "|"]
    for name in sorted(matrix, key=lambda n: (RECIPE_ORDER.index(n) if n in RECIPE_ORDER else 99, n)):
        cells = []
        for target in targets:
            cell = matrix[name].get(target)
            if cell is None:
                cells.append("–")
            elif "alias" in cell:
                chosen = cell["alias"]
                cells.append(f"→ `{chosen['data_free']}`; with `--calibration-data` → `{chosen['calibrated']}`")
            elif cell["supported"]:
                extra = [f"scheme `{cell['scheme']}`"] + (["needs calibration data"] if cell["calibration"] else [])
                extra += [f"min. {cell['minimum_deployment']}"] if cell["minimum_deployment"] else []
                cells.append(_cell(f"{cell['summary']} ({', '.join(extra)})"))
            else:
                cells.append("⛔ " + _cell(cell["reason"]))
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines += ["", "## LLM recipes (`edge-export llm --recipe`)", "",
              "| recipe | description | quantization | gates | per-target overrides |", "|---|---|---|---|---|"]
    for path in sorted(LLM_RECIPES.glob("*.toml")):
        data = tomllib.loads(path.read_text())
        overrides = "; ".join(f"{t}: {_cell(json.dumps(o))}" for t, o in data.get("targets", {}).items())
        lines.append(f"| `{data['name']}` | {_cell(data.get('description', ''))} | "
                     f"{_cell(json.dumps(data.get('quantization', {})))} | {_cell(json.dumps(data.get('gates', {})))}"
                     f" | {overrides or '–'} |")
    return "\n".join(lines) + "\n"


# --- schemas ---------------------------------------------------------------------------------

def _type(node: dict[str, Any]) -> str:
    """A schema node's type in a few words: type, const, enum, or the $def it refers to."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return f"[`{name}`](#def-{name})"
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    for key in ("oneOf", "anyOf"):
        if key in node:
            return " or ".join(_type(n) for n in node[key])
    kind = node.get("type", "any")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    if kind == "array" and "items" in node:
        kind = f"array of {_type(node['items'])}"
    return kind


def _constraints(node: dict[str, Any]) -> str:
    keys = ("pattern", "minimum", "maximum", "exclusiveMinimum", "minItems", "maxItems", "minLength", "format")
    parts = [f"{k} {_code_cell(str(node[k]))}" for k in keys if k in node]  # already cell-safe
    if node.get("additionalProperties") is False:
        parts.append("no other keys")
    return ", ".join(parts)


def _rows(node: dict[str, Any], path: str) -> list[str]:
    """Table rows for an object's properties, nested objects and arrays of objects flattened
    into dotted paths (``parity.thresholds``, ``inputs[]``)."""
    rows = []
    required = set(node.get("required", ()))
    for key, child in node.get("properties", {}).items():
        field = f"{path}.{key}" if path else key
        rows.append(f"| `{field}` | {_cell(_type(child))} | {'yes' if key in required else ''} | "
                    f"{_constraints(child)} | {_cell(child.get('description', ''))} |")
        rows += _rows(child, field)
        if child.get("type") == "array" and isinstance(child.get("items"), dict):
            rows += _rows(child["items"], f"{field}[]")
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and path:
        rows.append(f"| `{path}.*` | {_cell(_type(extra))} |  | {_constraints(extra)} | any other key |")
        rows += _rows(extra, f"{path}.*")
    return rows


HEADER = ["| field | type | required | constraints | description |", "|---|---|---|---|---|"]


def schema_page(path: Path) -> str:
    schema = json.loads(path.read_text())
    rel = path.relative_to(ROOT)
    lines = [f"# {schema.get('title', path.stem)}", "",
             f"*Generated at build time from `{rel}` (`$id` `{schema.get('$id', '')}`).*", "",
             *HEADER, *_rows(schema, "")]
    for name, node in schema.get("$defs", {}).items():
        lines += ["", f"## `{name}` {{#def-{name}}}", "", f"Type: {_type(node)}. {_constraints(node)}".rstrip(), ""]
        rows = _rows(node, "")
        lines += [*HEADER, *rows] if rows else []
    return "\n".join(lines) + "\n"


# --- the hook --------------------------------------------------------------------------------

def pages() -> dict[str, str]:
    """Every generated page, by its path under docs/."""
    out = {f"{CLI_DIR}/{_slug(name)}.md": command_page(name, cmd) for name, cmd in commands()}
    out["reference/exit-codes.md"] = exit_codes_page()
    out["reference/recipes.md"] = recipes_page()
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        out[f"{SCHEMA_DIR}/{path.name.removesuffix('.schema.json')}.md"] = schema_page(path)
    return out


_PAGES: dict[str, str] = {}


def on_config(config: Any) -> Any:
    """Generate the pages once per build, and expand the nav's ``Commands`` and ``Schemas``
    entries (each written in mkdocs.yml as one page) into every generated page of that section."""
    _PAGES.clear()
    _PAGES.update(pages())
    sections = {"Commands": CLI_DIR, "Schemas": SCHEMA_DIR}

    def expand(items: list[Any]) -> None:
        for item in items:
            if not isinstance(item, dict):
                continue
            for title, value in item.items():
                if title in sections and isinstance(value, str):
                    prefix = sections[title]
                    item[title] = [{_title(uri): uri} for uri in _PAGES if uri.startswith(prefix + "/")]
                elif isinstance(value, list):
                    expand(value)

    expand(config["nav"] or [])
    return config


def _title(src_uri: str) -> str:
    """The nav title of a generated page: its first heading, without markup."""
    return _PAGES[src_uri].split("\n", 1)[0].lstrip("# ").replace("`", "")


def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages to the build (nothing is written into docs/)."""
    from mkdocs.structure.files import File

    for src_uri, content in _PAGES.items():
        files.append(File.generated(config, src_uri, content=content))
    return files

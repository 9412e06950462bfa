"""Portable recipe names and ``--target all`` with a recipe some targets lack (issue 25, points
1 and 2): ``int8``/``int4`` resolve to each target's own 8-/4-bit recipe as its
recipes/<target>/aliases/ files say, and ``--target all`` builds every target that has the
recipe and names the others, as it does for targets that are not installed."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edge_export.build.pipeline import RunReport
from edge_export.build.plan import plan_targets_and_recipes
from edge_export.cli.main import cli
from edge_export.cli.summary import report_json
from edge_export.quant.recipe import builtin_aliases, builtin_recipes

from .conftest import DIGITS, run_cli

TARGETS = ("android", "ios", "tflite", "coreai")


def resolved(recipes: tuple[str, ...], calibrated: bool = False, targets: tuple[str, ...] = ("all",)):
    _, plan, skipped = plan_targets_and_recipes(targets, recipes, calibrated)
    return {(t, r.name, r.requested) for t, r in plan}, {s.target: s for s in skipped}


def test_target_all_skips_the_targets_without_the_recipe():
    plan, skipped = resolved(("int8-dynamic",))
    assert plan == {("android", "int8-dynamic", None), ("tflite", "int8-dynamic", None)}
    assert list(skipped) == ["ios", "coreai"]
    ios = skipped["ios"].to_json()
    assert ios["installed"] is True and ios["recipes"] == ["int8-dynamic"]
    assert ios["refused"].startswith("recipe 'int8-dynamic' is not supported on ios: Core ML has no dynamic")

    plan, skipped = resolved(("int8-weight",))
    assert plan == {("ios", "int8-weight", None), ("tflite", "int8-weight", None), ("coreai", "int8-weight", None)}
    assert list(skipped) == ["android"]


def test_one_line_per_skipped_target_naming_each_recipe_it_lacks():
    plan, skipped = resolved(("int8-dynamic", "8da4w", "fp32"))
    assert ("ios", "fp32", None) in plan and len(skipped) == 2
    assert skipped["ios"].recipes == skipped["coreai"].recipes == ("int8-dynamic", "8da4w")
    assert "'int8-dynamic' is not supported" in skipped["ios"].reason
    assert "'8da4w' is not supported" in skipped["ios"].reason
    data = report_json(RunReport(skipped=list(skipped.values())))
    assert [s["target"] for s in data["skipped"]] == ["ios", "coreai"]


@pytest.mark.parametrize("args", [
    ["--target", "ios", "--recipe", "int8-dynamic"],  # a named target is still refused
    ["--target", "ios", "--target", "all", "--recipe", "int8-dynamic"],
    ["--target", "all", "--recipe", "no-such-recipe"],  # no target has it
])
def test_refused_when_named_or_when_no_target_has_the_recipe(args, tmp_path):
    result = CliRunner().invoke(cli, ["--model", DIGITS, "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    assert "error: " in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_int8_and_int4_resolve_to_each_targets_recipe():
    plan, skipped = resolved(("int8",))
    assert not skipped
    assert plan == {("android", "int8-dynamic", "int8"), ("ios", "int8-weight", "int8"),
                    ("tflite", "int8-dynamic", "int8"), ("coreai", "int8-weight", "int8")}
    plan, _ = resolved(("int8",), calibrated=True)
    assert plan == {(t, "int8-static", "int8") for t in TARGETS}
    for calibrated in (False, True):
        plan, _ = resolved(("int4",), calibrated=calibrated)
        assert plan == {("android", "8da4w", "int4"), ("ios", "int4-weight", "int4"), ("tflite", "8da4w", "int4"),
                        ("coreai", "int4-weight", "int4")}


def test_a_portable_name_and_the_recipe_it_resolves_to_are_one_package():
    plan, _ = resolved(("int8", "int8-dynamic"), targets=("android",))
    assert plan == {("android", "int8-dynamic", "int8")}


@pytest.mark.parametrize("target", TARGETS)
def test_every_alias_names_a_supported_recipe_of_its_width(target):
    """The alias files are data: each int8 resolves to 8-bit recipes, each int4 to 4-bit ones,
    and only int8 differs with calibration data (no shipped 4-bit recipe calibrates)."""
    aliases = builtin_aliases(target)
    assert set(aliases) == {"int8", "int4"}
    shipped = builtin_recipes(target)
    for name, width in (("int8", 8), ("int4", 4)):
        for recipe in (aliases[name].calibrated, aliases[name].data_free):
            assert shipped[recipe].supported and shipped[recipe].param("bits") == width
        assert not shipped[aliases[name].data_free].calibration_required
    assert shipped[aliases["int8"].calibrated].calibration_required


def test_recipes_lists_what_each_portable_name_resolves_to():
    matrix = json.loads(CliRunner().invoke(cli, ["recipes", "--json"]).output)
    assert matrix["int8"]["ios"]["alias"] == {"calibrated": "int8-static", "data_free": "int8-weight"}
    assert matrix["int4"]["tflite"]["alias"] == {"calibrated": "8da4w", "data_free": "8da4w"}
    table = run_cli("recipes", env={"COLUMNS": "250"}).stdout
    assert "→ int8-weight; with --calibration-data → int8-static" in table


@pytest.mark.slow
def test_target_all_int8_gives_one_8bit_package_per_target(tmp_path):
    """One command for "8-bit on every platform"; ``int8-dynamic`` beside it adds nothing on
    android and tflite (same package) and names ios, which lacks it."""
    proc = run_cli("--model", DIGITS, "--target", "all", "--recipe", "int8", "--recipe", "int8-dynamic",
                   "--out", str(tmp_path), "--no-cache", "--name", "digits")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("skipped ios (--target all): recipe 'int8-dynamic' is not supported on ios"
            in " ".join(proc.stderr.split()))
    folder = tmp_path / "digits-0.1.0"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [
        "android-int8-dynamic", "coreai-int8-weight", "ios-int8-weight", "tflite-int8-dynamic"]
    for package in folder.iterdir():
        if package.is_dir():
            recipe = json.loads((package / "manifest.json").read_text())["recipe"]
            assert recipe["requested"] == "int8"
            assert package.name.endswith(recipe["name"])
    verified = run_cli("verify", str(folder / "ios-int8-weight"))
    assert verified.returncode == 0, verified.stderr  # the manifest schema takes "requested"


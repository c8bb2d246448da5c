"""attnviz.workflows.teaching: the module guide and its data files, parameter and FLOP counts, and the
insertion snippets."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from attnviz.layers import ATTENTION_REGISTRY, create_attention
from attnviz.layers.zoo_net import ZOO_KINDS, zoo_name
from attnviz.workflows import teaching
from attnviz.workflows.teaching import INSERTION_PATTERNS, MODULE_GUIDE, analytic_flop_ops, module_cost
from attnviz.workflows.teaching.loader import DATA_DIR, load_insertion_patterns, load_module_guides

_NODE = re.compile(r"^\s*(\w+) \[", re.MULTILINE)
_EDGE = re.compile(r"^\s*(\w+) -> (\w+)", re.MULTILINE)


def test_guide_covers_every_registry_kind_in_order() -> None:
    assert list(MODULE_GUIDE) == list(ATTENTION_REGISTRY)


@pytest.mark.parametrize("kind", list(ATTENTION_REGISTRY))
def test_guide_fields_are_filled(kind: str) -> None:
    guide = MODULE_GUIDE[kind]
    assert guide.kind == kind
    for name in ("short", "title", "formula", "what_it_computes", "what_the_map_means", "data_flow"):
        assert getattr(guide, name).strip(), name
    assert guide.paper.title and 2010 < guide.paper.year < 2030
    assert guide.paper.link.startswith("https://arxiv.org/abs/")
    assert guide.zoo_model == zoo_name(kind) and kind in ZOO_KINDS
    # 2-4 sentences of plain text
    assert 2 <= guide.what_it_computes.count(". ") + 1 <= 5
    # the submodule attnviz hooks is named in backticks
    assert "`" in guide.what_the_map_means


@pytest.mark.parametrize("kind", list(ATTENTION_REGISTRY))
def test_data_flow_is_a_well_formed_digraph(kind: str) -> None:
    dot = MODULE_GUIDE[kind].data_flow
    assert dot.startswith(f"digraph {kind} {{") and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}") and dot.count('"') % 2 == 0
    declared = set(_NODE.findall(dot)) - {"graph", "node", "edge"}
    edges = _EDGE.findall(dot)
    assert edges and declared
    used = {n for edge in edges for n in edge}
    assert used <= declared, used - declared  # no edge to an undeclared (default-styled) node
    assert declared <= used, declared - used  # no orphan node
    assert "#d1495b" in dot  # the submodule attnviz reads is highlighted


def test_se_flops_match_a_hand_count() -> None:
    # SE at C = 64: bottleneck round(64 / 16) = 4; the MLP runs on the pooled [64, 1, 1] vector.
    # fc1: 64 * 4 multiply-adds, fc2: 4 * 64; FLOPs = 2 x multiply-adds. Pooling, ReLU, sigmoid,
    # bias and the final rescaling are element-wise and not counted.
    c, rd = 64, 4
    expected_flops = 2 * (c * rd + rd * c)
    expected_params = (c * rd + rd) + (rd * c + c)
    assert module_cost("se", 64, (12, 12)) == (expected_params, expected_flops) == (580, 1024)


def test_cbam_flops_match_a_hand_count() -> None:
    c, rd, h, w = 64, 4, 12, 12
    mlp = 2 * (c * rd + rd * c)  # once on the average-pooled and once on the max-pooled vector
    spatial = 2 * (2 * 7 * 7) * h * w  # 7x7 convolution from (mean, max) to one map
    assert module_cost("cbam", c, (h, w))[1] == 2 * mlp + spatial


def test_deformable_conv_is_counted_analytically() -> None:
    c, h, w, k = 16, 6, 6, 9  # 3x3 kernel, stride 1, padding 1: output 6x6
    offset_conv = 2 * c * k * (2 * k) * h * w
    mask_conv = 2 * c * k * k * h * w
    main_conv = 2 * c * c * k * h * w
    sampling = 2 * 4 * c * k * h * w  # bilinear: 4 multiply-adds per sampled value
    modulation = c * k * h * w  # one multiply by the mask per sampled value
    assert module_cost("deform", c, (h, w))[1] == offset_conv + mask_conv + main_conv + sampling + modulation


def test_grid_sample_is_counted_analytically() -> None:
    x, grid = torch.randn(2, 3, 5, 5), torch.rand(2, 4, 6, 2) * 2 - 1
    counter = FlopCounterMode(display=False, custom_mapping=analytic_flop_ops())
    with counter:
        F.grid_sample(x, grid, mode="bilinear", align_corners=True)
        F.grid_sample(x, grid, mode="nearest", align_corners=True)
    assert counter.get_total_flops() == 2 * 4 * (2 * 3 * 4 * 6)


def test_dat_counts_both_of_its_grid_samples() -> None:
    plain = FlopCounterMode(display=False)
    module = create_attention("dat", 32).eval()
    with torch.no_grad(), plain:
        module(torch.zeros(1, 32, 6, 6))
    # default DAT: 4 heads, 2 groups, keys on the 6x6 grid (stride 1)
    features = 2 * 4 * (2 * 16 * 6 * 6)  # each group samples its 16 channels at 36 points
    bias = 2 * 4 * (2 * 2 * 36 * 36)  # each group's 2 heads read the bias table at 36 x 36 places
    assert module_cost("dat", 32, (6, 6))[1] == plain.get_total_flops() + features + bias


def test_torch_formulas_win_over_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(flop_registry, torch.ops.aten.grid_sampler_2d, lambda *a, **k: 0)
    assert torch.ops.aten.grid_sampler_2d not in analytic_flop_ops()
    assert torch.ops.torchvision.deform_conv2d in analytic_flop_ops()


@pytest.mark.parametrize("kind", list(ATTENTION_REGISTRY))
def test_module_cost_counts_parameters_and_positive_flops(kind: str) -> None:
    params, flops = module_cost(kind, 32, (6, 5))
    module = create_attention(kind, 32)
    assert params == sum(p.numel() for p in module.parameters()) > 0
    assert flops > 0
    larger = module_cost(kind, 32, (12, 10))[1]
    if kind in ("se", "eca"):
        assert larger == flops  # only the pooled vector is multiplied: pooling is not counted
    else:
        assert larger > flops  # more positions, more work


@pytest.mark.parametrize(
    ("kind", "channels", "size", "match"),
    [
        ("nope", 64, (12, 12), "unknown attention kind"),
        ("se", 0, (12, 12), "channels must be a positive integer"),
        ("se", 64, (0, 12), "size must be two positive integers"),
        ("se", 64, (12,), "size must be two positive integers"),
        ("mhsa", 30, (4, 4), "multiple of num_heads"),
        ("mhsa", 64, (33, 33), "max_tokens"),
    ],
)
def test_module_cost_refuses_bad_input(kind: str, channels: int, size: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        module_cost(kind, channels, size)


def test_flops_text() -> None:
    assert teaching.flops_text(384) == "384 FLOPs"
    assert teaching.flops_text(1024) == "1.02 kFLOPs"
    assert teaching.flops_text(21_239_808) == "21.2 MFLOPs"
    assert teaching.flops_text(4_100_000_000) == "4.1 GFLOPs"


def test_three_insertion_patterns() -> None:
    assert [p.key for p in INSERTION_PATTERNS] == ["serial", "parallel", "core"]
    for pattern in INSERTION_PATTERNS:
        assert pattern.title and pattern.explanation
        assert "attnviz.layers.insertion" in pattern.code


@pytest.mark.parametrize("pattern", INSERTION_PATTERNS, ids=lambda p: p.key)
def test_insertion_snippets_run(pattern: teaching.InsertionPattern, capsys: pytest.CaptureFixture) -> None:
    namespace: dict[str, object] = {}
    exec(compile(pattern.code, f"<{pattern.key} snippet>", "exec"), namespace)
    if pattern.key == "serial":
        assert namespace["logits"].shape == (2, 10)
        assert type(namespace["model"].layer3[1]).__name__ == "CBAM"
        assert capsys.readouterr().out.strip() == "CBAM"
    elif pattern.key == "parallel":
        assert namespace["added"](namespace["x"]).shape == (2, 64, 14, 14)
        assert namespace["fused"](namespace["x"]).shape == (2, 64, 14, 14)
    else:
        assert namespace["logits"].shape == (2, 10)
        assert len(namespace["model"][1].blocks) == 2


# --------------------------------------------------------------------------------------------------
# Data files
# --------------------------------------------------------------------------------------------------


def test_every_data_file_loads() -> None:
    guide_files = sorted((DATA_DIR / "guides").glob("*.toml"))
    assert sorted(path.stem for path in guide_files) == sorted(ATTENTION_REGISTRY)  # no stray file
    for path in [*guide_files, DATA_DIR / "diagrams.toml", DATA_DIR / "insertion_patterns.toml"]:
        with path.open("rb") as file:
            assert tomllib.load(file), path
    assert load_module_guides() == MODULE_GUIDE
    assert load_insertion_patterns() == INSERTION_PATTERNS
    assert load_module_guides() is not load_module_guides()  # a new dict: a caller cannot spoil the cache


def test_text_is_unwrapped_and_diagrams_are_expanded() -> None:
    for guide in MODULE_GUIDE.values():
        for text in (guide.formula, guide.what_it_computes, guide.what_the_map_means):
            assert "\n" not in text and "  " not in text and text == text.strip()
        lines = guide.data_flow.splitlines()
        assert lines[1].startswith("  graph [rankdir=LR") and "class=" not in guide.data_flow
    se = MODULE_GUIDE["se"]
    # the formula's two lines, joined with a space
    assert se.formula == r"\mathbf{s} = \sigma\big(W_2\,\delta(W_1\,\mathrm{GAP}(X))\big) \in (0,1)^{C}," + (
        r" \qquad Y_c = s_c\,X_c"
    )
    assert se.what_it_computes.startswith(
        "Global average pooling squeezes each channel to one number; a bottleneck"
    )
    dot = se.data_flow.splitlines()
    assert (
        '  x [shape=box, style="rounded", color="#888888", fillcolor="white", label="X\\n[C, H, W]"];' in dot
    )
    assert (
        '  m [shape=circle, style="filled", fillcolor="#f4f4f4", width=0.3, fixedsize=true, label="×"];'
        in dot
    )
    serial = INSERTION_PATTERNS[0]
    assert serial.code.startswith("import torch\n") and serial.code.endswith("# [2, 10]\n")


def _data_copy(tmp_path: Path) -> Path:
    """A copy of the teaching data files that a test may break."""
    copy = tmp_path / "teaching"
    shutil.copytree(DATA_DIR, copy, ignore=shutil.ignore_patterns("*.py", "__pycache__", "*.md"))
    return copy


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


_SE = "guides/se.toml"
_PATTERNS = "insertion_patterns.toml"


@pytest.mark.parametrize(
    ("file", "old", "new", "match"),
    [
        (_SE, "paper.year = 2018\n", "", r"se\.toml: missing key 'paper\.year'"),
        (_SE, 'short = "SE"\n', "", r"se\.toml: missing key 'short'"),
        (_SE, 'short = "SE"', 'short = "SE"\nnote = "x"', r"se\.toml: unknown key 'note'"),
        (_SE, "paper.year = 2018", 'paper.year = "2018"', r"se\.toml: key 'paper\.year' must be an integer"),
        (_SE, 'short = "SE"', 'short = " "', r"se\.toml: key 'short' must be a non-empty string"),
        (_SE, 'kind = "se"', 'kind = "eca"', r"se\.toml: key 'kind' is 'eca' but the file is named se\.toml"),
        (
            _SE,
            "gate [class=tap,",
            "gate [class=tapp,",
            r"se\.toml: key 'data_flow' uses the unknown node class 'tapp'",
        ),
        (_SE, "digraph se {", "digraph squeeze {", r"se\.toml: key 'data_flow' must be 'digraph se \{"),
        (_SE, 'short = "SE"', "short = 'SE", r"se\.toml: not valid TOML"),
        (
            "diagrams.toml",
            "tap = 'shape",
            "tip = 'shape",
            r"guides/ca\.toml: key 'data_flow' uses the unknown node class 'tap'",  # the first guide
        ),
        ("diagrams.toml", "header = '''", "heading = '''", r"diagrams\.toml: missing key 'header'"),
        (_PATTERNS, 'key = "parallel"\n', "", r"insertion_patterns\.toml: missing key 'patterns\[1\]\.key'"),
        (
            _PATTERNS,
            'key = "core"',
            'key = "serial"',
            r"insertion_patterns\.toml: key 'patterns\[2\]\.key' repeats",
        ),
        (_PATTERNS, "[[patterns]]", "[patterns]", r"insertion_patterns\.toml: not valid TOML"),
    ],
)
def test_a_broken_data_file_names_the_file_and_the_key(
    tmp_path: Path, file: str, old: str, new: str, match: str
) -> None:
    data = _data_copy(tmp_path)
    _edit(data / file, old, new)
    load = load_insertion_patterns if file == _PATTERNS else load_module_guides
    with pytest.raises(ValueError, match=match):
        load(data)


def test_an_unknown_module_kind_names_the_file_and_the_key(tmp_path: Path) -> None:
    data = _data_copy(tmp_path)
    text = (data / _SE).read_text(encoding="utf-8").replace('kind = "se"', 'kind = "sse"')
    (data / "guides" / "sse.toml").write_text(text, encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"sse\.toml: key 'kind' is the unknown module kind 'sse'; known kinds: se, eca"
    ):
        load_module_guides(data)


def test_a_missing_data_file_is_named(tmp_path: Path) -> None:
    data = _data_copy(tmp_path)
    (data / _PATTERNS).unlink()
    with pytest.raises(ValueError, match=r"insertion_patterns\.toml: the teaching data file is missing"):
        load_insertion_patterns(data)
    (data / "diagrams.toml").unlink()
    with pytest.raises(ValueError, match=r"diagrams\.toml: the teaching data file is missing"):
        load_module_guides(data)
    shutil.copy(DATA_DIR / "diagrams.toml", data / "diagrams.toml")
    shutil.rmtree(data / "guides")
    with pytest.raises(ValueError, match=r"guides: no guide files"):
        load_module_guides(data)

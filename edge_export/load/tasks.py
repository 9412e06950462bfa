"""``--task``: what a model is, named as optimum names it, declared as data.

A plain ``nn.Module`` from a PyPI package hands over tensors and nothing else, so without its
own ``edge_export_metadata`` nothing says its first output is class logits and top-1 agreement
is never gated. A task says it: each entry of ``TASKS`` states what the model's input and
outputs must look like, the kind of the outputs (which decides the top-1 gate), and the
preprocessing the apps read for an image input.

Precedence, from most to least specific: a kind or a preprocessing key the model's own
metadata declares (it names one output or one key, so it knows more than a task does), then the
task's, then the graph heuristic of ``workspace.output_kinds`` (which a task replaces, except that
a classifier's output produced by a softmax stays ``class-probabilities``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_export.errors import UsageError

if TYPE_CHECKING:  # the CLI reads TASKS for --task's choices before numpy is imported
    import numpy as np

    from edge_export.load.tensors import TensorSpec

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# A quarter second at 16 kHz: a shorter float input is a vector or a few embeddings, not audio.
MIN_AUDIO_VALUES = 4000


@dataclass(frozen=True)
class Task:
    """``input``: image (float, rank 4), tokens (integer, rank 2), audio (float, rank 2 or 3)
    or any. ``first_ranks``: the ranks the first output may have (empty: any), shown in the
    refusal as ``first_shape``. ``box_output``: some output ends in 4 coordinates. ``kind``: the
    first output's kind; every other output is a plain tensor. ``guess_if_scores``: shapes alone
    do not tell this task from feature extraction (a rank-3 output is hidden states as often as
    per-token logits), so ``inspect`` guesses it only when the graph marks the output as scores."""

    name: str
    input: str
    first_ranks: tuple[int, ...]
    first_shape: str
    kind: str
    box_output: bool = False
    same_spatial: bool = False  # the first output keeps the input image's height and width
    guess_if_scores: bool = False


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("image-classification", "image", (2,), "[batch, classes]", "class-logits"),
    Task("object-detection", "image", (3,), "[batch, queries, classes]", "tensor", box_output=True),
    Task("semantic-segmentation", "image", (4,), "[batch, classes, height, width]", "tensor",
         same_spatial=True),
    Task("text-classification", "tokens", (2,), "[batch, classes]", "class-logits"),
    Task("token-classification", "tokens", (3,), "[batch, tokens, classes]", "tensor", guess_if_scores=True),
    Task("audio-classification", "audio", (2,), "[batch, classes]", "class-logits"),
    Task("automatic-speech-recognition", "audio", (3,), "[batch, frames, vocabulary]", "tensor",
         guess_if_scores=True),
    Task("feature-extraction", "any", (), "any tensors", "tensor"),
)}

_INPUT_WORDS = {"image": "an image input [batch, channels, height, width]",
                "tokens": "an integer token input [batch, tokens]",
                "audio": f"a float audio input [batch, samples] or [batch, frames, features] of at least "
                         f"{MIN_AUDIO_VALUES} values", "any": "any input"}
# Outputs named like these are features, which makes feature-extraction more than a fallback.
FEATURE_NAMES = ("hidden", "embed", "pooler", "feature")


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UsageError(f"unknown task {name!r}", hint="one of " + ", ".join(TASKS))
    return TASKS[name]


def misfit(task: Task, inputs: list[TensorSpec], outputs: list[tuple[str, np.ndarray]]) -> str | None:
    """Why the model's input and outputs do not fit ``task``, or None when they do."""
    if not _input_fits(task.input, inputs):
        first = inputs[0] if inputs else None
        got = f"input {first.name!r} is {first.dtype} {_shape(first.shape)}" if first else "the model has no input"
        return f"--task {task.name} needs {_INPUT_WORDS[task.input]}; {got}"
    name, first = outputs[0]
    if task.first_ranks and first.ndim not in task.first_ranks:
        return (f"--task {task.name} needs its first output shaped {task.first_shape}; "
                f"output {name!r} is rank {first.ndim} ({_shape(first.shape)})")
    if task.box_output and not any(o.ndim >= 2 and o.shape[-1] == 4 for _, o in outputs):
        return f"--task {task.name} needs an output of boxes [..., 4]; no output ends in 4"
    if task.same_spatial and tuple(first.shape[-2:]) != _spatial(inputs[0]):
        return (f"--task {task.name} needs its first output at the input's height and width; "
                f"output {name!r} is {_shape(first.shape)}")
    return None


def check_task(task: Task, inputs: list[TensorSpec], outputs: list[tuple[str, np.ndarray]]) -> None:
    """Refuse, in one line (exit 2), a task the model's outputs do not fit."""
    reason = misfit(task, inputs, outputs)
    if reason:
        raise UsageError(reason, hint="drop --task, or name the task these outputs fit (edge-export inspect guesses)")


def task_kinds(task: Task, heuristic: tuple[str, ...], declared: dict[str, str],
               names: list[str]) -> tuple[str, ...]:
    """Each output's kind under ``task`` (see the module docstring for the precedence)."""
    kinds = []
    for i, name in enumerate(names):
        kind = task.kind if i == 0 else "tensor"
        if kind == "class-logits" and heuristic[i] == "class-probabilities":
            kind = "class-probabilities"
        kinds.append(declared.get(name, kind))
    return tuple(kinds)


def task_preprocessing(task: Task, inputs: list[TensorSpec], declared: dict[str, Any]) -> dict[str, Any]:
    """The apps' preprocessing for an image task's input (docs/app-spec.md): its size, pixels
    scaled to [0, 1] and, for RGB, the ImageNet mean and std that torchvision and timm
    classifiers are trained with; every key the model's metadata declares wins."""
    if task.input != "image" or len(inputs) != 1:
        return dict(declared)
    shape = inputs[0].shape
    layout = "NCHW" if shape[1] in (1, 3) else "NHWC"
    channels = shape[1] if layout == "NCHW" else shape[-1]
    defaults: dict[str, Any] = {"layout": layout, "image_size": list(_spatial(inputs[0])), "scale": 1 / 255}
    if channels == 3:
        defaults.update(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return {**defaults, **declared}


def guess_task(inputs: list[TensorSpec], outputs: list[tuple[str, np.ndarray]],
               kinds: tuple[str, ...]) -> tuple[str, str, str]:
    """(task, high|medium|low, why): the first task of ``TASKS`` the model fits. High for a
    classifier of images or tokens whose first output the graph already marks as class scores
    (labels, a softmax or argmax, a ``*logits`` name); medium when only the shapes fit (or the
    input is audio); feature-extraction, medium when an output is named as features, else low."""
    scores = bool(kinds) and kinds[0] in ("class-logits", "class-probabilities")
    for task in TASKS.values():
        if task.name == "feature-extraction" or misfit(task, inputs, outputs) or (task.guess_if_scores and not scores):
            continue
        why = f"{_INPUT_WORDS[task.input].split(' [')[0]}, first output {_shape(outputs[0][1].shape)}"
        if scores and (task.kind == "class-logits" or task.guess_if_scores):
            confidence = "high" if task.input in ("image", "tokens") else "medium"
            return task.name, confidence, f"{why}, which the graph marks {kinds[0]}"
        return task.name, "medium", f"{why} fit {task.first_shape}"
    named = [n for n, _ in outputs if any(word in n.lower() for word in FEATURE_NAMES)]
    if named:
        return "feature-extraction", "medium", f"output {named[0]!r} is named as features"
    return "feature-extraction", "low", "no more specific task fits these inputs and outputs"


def _input_fits(wanted: str, inputs: list[TensorSpec]) -> bool:
    if wanted == "any":
        return True
    if not inputs:
        return False
    first = inputs[0]
    floating = first.dtype.startswith(("float", "bfloat"))
    if wanted == "image":
        return len(inputs) == 1 and floating and len(first.shape) == 4 and (
            first.shape[1] in (1, 3, 4) or first.shape[-1] in (1, 3, 4))
    if wanted == "tokens":
        return not floating and len(first.shape) == 2
    values = 1
    for size in first.shape[1:]:
        values *= size
    return floating and len(first.shape) in (2, 3) and values >= MIN_AUDIO_VALUES  # audio


def _spatial(spec: TensorSpec) -> tuple[int, int]:
    shape = spec.shape
    return (shape[2], shape[3]) if shape[1] in (1, 3, 4) else (shape[1], shape[2])


def _shape(shape: Any) -> str:
    return "x".join(map(str, shape))

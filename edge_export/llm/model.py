"""Load a causal LM from a local transformers checkpoint directory or a ``module:attr``.

Nothing is ever downloaded: directories are read with ``local_files_only``, so a
typo in a path can never turn into a network fetch of a hub model of that name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_export.errors import UsageError

CHECKPOINT_FILES = ("tokenizer.json", "generation_config.json")


@dataclass
class LoadedLM:
    model: Any                # a transformers PreTrainedModel with a causal-LM head, eval mode, fp32
    name: str
    tokenizer_json: Path | None  # the checkpoint's tokenizer.json, copied into every package
    chat_template: str | None
    source: str

    @property
    def config(self) -> Any:
        return self.model.config.get_text_config()


def load_lm(spec: str) -> LoadedLM:
    path = Path(spec)
    if path.is_dir() or (":" not in spec and not spec.endswith(".py")):
        return _load_dir(path)
    from edge_export.load.model import _load_module

    module, _examples, name = _load_module(spec, trust_pickle=False)
    model = _check_causal_lm(module, spec)
    tokenizer = getattr(module, "edge_export_tokenizer_json", None)
    return LoadedLM(model, name, Path(tokenizer) if tokenizer else None, None, spec)


def _load_dir(path: Path) -> LoadedLM:
    if not path.is_dir():
        raise UsageError(f"model directory {path} does not exist",
                         hint="pass a local transformers checkpoint directory or module:attr")
    if not (path / "config.json").is_file():
        raise UsageError(f"{path} has no config.json: not a transformers checkpoint directory")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (ValueError, OSError, KeyError) as exc:
        raise UsageError(f"{path}/config.json cannot be read: {str(exc).splitlines()[0][:200]}") from exc
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    except ValueError as exc:
        raise UsageError(f"{path} is not a causal language model ({type(config).__name__}): "
                         f"{str(exc).splitlines()[0][:160]}") from exc
    except OSError as exc:
        raise UsageError(f"{path}: cannot load the weights: {str(exc).splitlines()[0][:200]}") from exc
    tokenizer = path / "tokenizer.json"
    return LoadedLM(_check_causal_lm(model, str(path)), path.resolve().name,
                    tokenizer if tokenizer.is_file() else None, _chat_template(path), str(path))


def _check_causal_lm(model: Any, spec: str) -> Any:
    from transformers import GenerationMixin, PreTrainedModel

    if not isinstance(model, PreTrainedModel) or not isinstance(model, GenerationMixin) \
            or not hasattr(model, "lm_head"):
        raise UsageError(f"{spec} is a {type(model).__name__}, not a transformers causal LM",
                         hint="return e.g. a LlamaForCausalLM or Qwen2ForCausalLM")
    return model.float().eval()


def _chat_template(path: Path) -> str | None:
    import json

    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    config = path / "tokenizer_config.json"
    if config.is_file():
        return json.loads(config.read_text()).get("chat_template")
    return None


def check_context(lm: LoadedLM, max_context: int) -> None:
    limit = getattr(lm.config, "max_position_embeddings", None)
    if limit is not None and max_context > limit:
        raise UsageError(f"--max-context {max_context} exceeds the model's max_position_embeddings {limit}",
                         hint=f"use --max-context {limit} or less")


def special_ids(lm: LoadedLM) -> tuple[int | None, list[int]]:
    """(bos, eos ids) from the generation config, else the model config."""
    sources = [lm.model.generation_config, lm.config]
    bos = next((s.bos_token_id for s in sources if getattr(s, "bos_token_id", None) is not None), None)
    eos = next((s.eos_token_id for s in sources if getattr(s, "eos_token_id", None) is not None), [])
    return bos, [eos] if isinstance(eos, int) else list(eos)

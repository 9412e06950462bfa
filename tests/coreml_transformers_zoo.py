"""Small-config transformers models with seeded random weights, for Core ML coverage.

Each builder returns ``(module, example_inputs)``; the module returns plain tensors
(the ``ModelOutput`` is unwrapped here so the conversion is what is tested). Text
models take int64 token ids and an int64 attention mask with padding at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

SEQ = 12
VOCAB = 96
Inputs = tuple[torch.Tensor, ...]


class Unwrap(nn.Module):
    """Call a transformers model and return the named output fields as a tuple."""

    def __init__(self, model: nn.Module, fields: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.fields = model.eval(), fields

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(*args)
        return tuple(getattr(out, f) for f in self.fields)


class UnwrapText(Unwrap):
    """Text models take keywords: positional order differs between architectures."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return tuple(getattr(out, f) for f in self.fields)


def _text_inputs() -> Inputs:
    ids = torch.randint(3, VOCAB, (1, SEQ), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(1, SEQ, dtype=torch.int64)
    mask[:, SEQ - 3 :] = 0
    return ids, mask


def _text(config_cls: str, model_cls: str, field: str = "last_hidden_state", **cfg) -> Callable:
    def build() -> tuple[nn.Module, Inputs]:
        import transformers

        torch.manual_seed(0)
        config = getattr(transformers, config_cls)(vocab_size=VOCAB, **cfg)
        model = getattr(transformers, model_cls)(config)
        return UnwrapText(model, (field,)), _text_inputs()

    return build


def _he_init(model: nn.Module) -> None:
    """Some transformers CNNs initialise convs and norm scales with std 0.02, so deep random
    ones output ~1e-22 and any comparison measures nothing; He init keeps activations O(1)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)


def _image(config_cls: str, model_cls: str, field: str, size: int = 32, **cfg) -> Callable:
    def build() -> tuple[nn.Module, Inputs]:
        import transformers

        torch.manual_seed(0)
        config = getattr(transformers, config_cls)(**cfg)
        model = getattr(transformers, model_cls)(config)
        _he_init(model)
        pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
        return Unwrap(model, (field,)), (pixels,)

    return build


_BERTISH = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                max_position_embeddings=64)
_DECODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64, use_cache=False)
_VIT = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64)


def _whisper_encoder() -> tuple[nn.Module, Inputs]:
    import transformers

    torch.manual_seed(0)
    config = transformers.WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2,
                                        encoder_ffn_dim=64, decoder_layers=1, decoder_attention_heads=2,
                                        decoder_ffn_dim=64, num_mel_bins=16, max_source_positions=16,
                                        vocab_size=VOCAB, pad_token_id=1, bos_token_id=2, eos_token_id=2,
                                        decoder_start_token_id=2)
    encoder = transformers.WhisperModel(config).get_encoder()
    features = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(1))
    return Unwrap(encoder, ("last_hidden_state",)), (features,)


def _wav2vec2() -> tuple[nn.Module, Inputs]:
    import transformers

    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 2),
                                         conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                                         num_conv_pos_embedding_groups=2, vocab_size=VOCAB)
    audio = torch.randn(1, 800, generator=torch.Generator().manual_seed(1))
    return Unwrap(transformers.Wav2Vec2Model(config), ("last_hidden_state",)), (audio,)


class _ClipEmbeddings(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, ids: torch.Tensor, pixels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(input_ids=ids, pixel_values=pixels, attention_mask=mask)
        return out.logits_per_image, out.text_embeds, out.image_embeds


def _clip() -> tuple[nn.Module, Inputs]:
    import transformers

    torch.manual_seed(0)
    text = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=SEQ, projection_dim=16)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, projection_dim=16)
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    ids, mask = _text_inputs()
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return _ClipEmbeddings(transformers.CLIPModel(config)), (ids, pixels, mask)


ZOO: dict[str, Callable[[], tuple[nn.Module, Inputs]]] = {
    "bert": _text("BertConfig", "BertModel", **_BERTISH),
    "distilbert": _text("DistilBertConfig", "DistilBertModel", dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                        max_position_embeddings=64),
    "mobilebert": _text("MobileBertConfig", "MobileBertModel", hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=32, embedding_size=16, intra_bottleneck_size=16,
                        true_hidden_size=16, num_feedforward_networks=2, max_position_embeddings=64),
    "albert": _text("AlbertConfig", "AlbertModel", embedding_size=16, **_BERTISH),
    "roberta": _text("RobertaConfig", "RobertaModel", pad_token_id=1, **_BERTISH),
    "gpt2": _text("GPT2Config", "GPT2LMHeadModel", "logits", n_embd=32, n_layer=2, n_head=2, n_positions=64,
                  use_cache=False),
    "llama": _text("LlamaConfig", "LlamaForCausalLM", "logits", **_DECODER),
    "qwen2": _text("Qwen2Config", "Qwen2ForCausalLM", "logits", **_DECODER),
    "phi": _text("PhiConfig", "PhiForCausalLM", "logits", **_DECODER),
    "t5-encoder": _text("T5Config", "T5EncoderModel", d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
    "vit": _image("ViTConfig", "ViTModel", "last_hidden_state", **_VIT),
    "deit": _image("DeiTConfig", "DeiTModel", "last_hidden_state", **_VIT),
    "swin": _image("SwinConfig", "SwinModel", "last_hidden_state", image_size=32, patch_size=4, embed_dim=16,
                   depths=[1, 1], num_heads=[2, 2], window_size=4),
    "mobilenetv2": _image("MobileNetV2Config", "MobileNetV2ForImageClassification", "logits", image_size=32,
                          depth_multiplier=0.35, num_labels=10),
    "efficientnet": _image("EfficientNetConfig", "EfficientNetForImageClassification", "logits", image_size=32,
                           width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320, num_labels=10),
    "resnet": _image("ResNetConfig", "ResNetForImageClassification", "logits", embedding_size=16,
                     hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_labels=10),
    "convnext": _image("ConvNextConfig", "ConvNextForImageClassification", "logits", hidden_sizes=[16, 32],
                       depths=[1, 1], num_stages=2, num_labels=10),
    "regnet": _image("RegNetConfig", "RegNetForImageClassification", "logits", embedding_size=16,
                     hidden_sizes=[16, 32], depths=[1, 1], groups_width=8, num_labels=10),
    "segformer": _image("SegformerConfig", "SegformerForSemanticSegmentation", "logits", num_encoder_blocks=2,
                        depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32], num_attention_heads=[1, 2],
                        decoder_hidden_size=32, patch_sizes=[7, 3], strides=[4, 2], num_labels=4),
    "whisper-encoder": _whisper_encoder,
    "wav2vec2": _wav2vec2,
    "clip": _clip,
}


def convert_to_mil(model: nn.Module, args: Inputs, path: Path, *, states: Sequence[Any] = (),
                   target: str = "iOS17", fp16: bool = False) -> Any:
    """Export, decompose for coremltools exactly as the ios exporter does, convert, save
    the .mlpackage under ``path`` and load it into the MIL reference executor."""
    from edge_export.exporters.coreml import mil
    from edge_export.exporters.coreml.decompositions import decompose_for_coreml
    from edge_export.exporters.coreml.mil.program import coremltools, quiet

    ct = coremltools()
    with quiet():
        program = decompose_for_coreml(torch.export.export(model.eval(), args))
        mlmodel = ct.convert(
            program,
            inputs=[ct.TensorType(name=f"input_{i}", shape=tuple(a.shape)) for i, a in enumerate(args)],
            states=list(states),
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32,
            minimum_deployment_target=getattr(ct.target, target),
            skip_model_load=True,
        )
        mlmodel.save(str(path))
    return mil.load(path)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

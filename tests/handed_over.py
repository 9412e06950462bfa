"""Models as users hand them over: structured outputs, keyword inputs, odd strides and the
compression users apply themselves. Small and seeded, so each exports in seconds."""

from __future__ import annotations

import torch
from torch import nn


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()


def _image() -> torch.Tensor:
    return torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def nhwc_input():
    """An image tensor made from an HWC array, as users do: NHWC in memory."""
    hwc = torch.randn(16, 16, 3, generator=torch.Generator().manual_seed(1))
    return _cnn(), (hwc.permute(2, 0, 1).unsqueeze(0),)


def channels_last():
    return _cnn().to(memory_format=torch.channels_last), (_image().to(memory_format=torch.channels_last),)


def pruned():
    """Unstructured L1 pruning with the masks still attached (weight_orig + weight_mask)."""
    from torch.nn.utils import prune

    model = _cnn()
    for layer in (model[0], model[2], model[6]):
        prune.l1_unstructured(layer, "weight", amount=0.5)
    return model, (_image(),)


def half():
    return _cnn().half(), (_image().half(),)


def pt2e():
    """Quantized by the user with PT2E (XNNPACKQuantizer, calibrated) and handed over converted."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(768, 256), nn.ReLU(), nn.Linear(256, 10)).eval()
    example = (_image(),)
    graph = torch.export.export(mlp, example).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph = prepare_pt2e(graph, quantizer)
    for seed in range(8):
        graph(torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed)))
    return convert_pt2e(graph), example


def _torchao(config) -> tuple[nn.Module, tuple[torch.Tensor]]:
    from torchao.quantization import quantize_

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    quantize_(model, config)
    return model, (torch.randn(1, 64, generator=torch.Generator().manual_seed(3)),)


def torchao_int8_weight():
    from torchao.quantization import Int8WeightOnlyConfig

    return _torchao(Int8WeightOnlyConfig())


def torchao_int8_dynamic():
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig

    return _torchao(Int8DynamicActivationInt8WeightConfig())


def torchao_8da4w():
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, PerGroup

    return _torchao(Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(32)))


def torchao_float8():
    """A torchao scheme no target has an equivalent for."""
    from torchao.quantization import Float8WeightOnlyConfig

    return _torchao(Float8WeightOnlyConfig())


def _bert_config():
    from transformers import BertConfig

    return BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=32, num_labels=3)


def _tokens() -> dict[str, torch.Tensor]:
    ids = torch.randint(1, 100, (1, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(1, 12, dtype=torch.long)
    mask[0, 9:] = 0  # padding, as a tokenizer gives it
    return {"input_ids": ids, "attention_mask": mask}


def bert_classifier():
    """A transformers classifier as it comes: keyword int64 inputs, a ModelOutput out."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(_bert_config()).eval(), _tokens()


def bert_encoder():
    """An encoder whose outputs are hidden states (no classes): last_hidden_state, pooler_output."""
    from transformers import BertModel

    torch.manual_seed(0)
    return BertModel(_bert_config()).eval(), _tokens()


def nested_outputs():
    class Nested(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.fc = nn.Linear(4, 6)

        def forward(self, x: torch.Tensor) -> dict:
            y = self.fc(x)
            return {"scores": y, "parts": (y[:, :3].relu(), [y[:, 3:].sigmoid()])}

    return Nested().eval(), (torch.randn(1, 4),)


def fixed_length():
    """A model that bakes its sequence length into a reshape: it cannot take a dynamic length."""
    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.fc = nn.Linear(12 * 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.reshape(1, 12 * 4))

    return Fixed().eval(), (torch.randn(1, 12, 4),)

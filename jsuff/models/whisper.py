"""Whisper encoder classifier (``WhisperForAudioClassification``) in Flax, log-mel front end in JAX.

Waveform in, logits out, numerically the Hugging Face model behind ``WhisperFeatureExtractor``:

1. front end: :func:`jsuff.models.logmel.whisper_log_mel` (pad/trim to ``n_samples``, 80 or 128
   mel bins, log10, max-minus-8 clamp, ``(x + 4) / 4``);
2. ``conv1`` (kernel 3, padding 1) and ``conv2`` (kernel 3, stride 2, padding 1), each followed by
   exact GELU, so ``n_frames`` frames become ``max_source_positions`` tokens;
3. ``embed_positions`` added (stored in the checkpoint: sinusoids in the released models);
4. pre-LayerNorm encoder layers (``torch.nn.LayerNorm``'s 1e-5; the query is scaled before
   ``q @ k.T``; ``k_proj`` has no bias), a final LayerNorm;
5. the head: ``projector`` on every token, mean over time, ``classifier``. With
   ``use_weighted_layer_sum`` the projector sees a softmax-weighted sum of the hidden states
   instead (the embeddings, each layer's output, the last one after the final LayerNorm, as
   ``transformers`` collects them).

Input policy: the module pads a clip with zeros or trims it to ``n_samples`` (30 s at 16 kHz for
the released models), as the extractor does, so any length works. The policy declares that it pads
internally (``InputPolicy.pads_internally``): callers do not pad a shorter clip, so a 0.68 s clip is
explained over its own 0.68 s (an rfft grid of its own bins, not of 30 s) and its sufficient signal
is 0.68 s long; its logits are those of the padded clip. Longer clips are cropped to ``n_samples``.

Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> cfg = WhisperConfig(d_model=32, encoder_layers=1, encoder_attention_heads=2,
    ...                     encoder_ffn_dim=37, max_source_positions=50, classifier_proj_size=8,
    ...                     num_labels=3, n_samples=16000)
    >>> Whisper(cfg, nnx.Rngs(0))(jnp.zeros((2, 16000))).shape
    (2, 3)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jsuff.models._family import FamilyConfig
from jsuff.models._transformer import ATTENTION_RENAMED, PreNormBlock, activation, gelu_exact, layer_norm, random_normal
from jsuff.models.base import Architecture, InputPolicy, ModelError, register
from jsuff.models.logmel import LogMelConfig, whisper_log_mel

__all__ = ["Whisper", "WhisperConfig"]

# WhisperEncoderLayer builds torch.nn.LayerNorm(d_model) without an epsilon: torch's default.
TORCH_LAYER_NORM_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class WhisperConfig(FamilyConfig):
    """A Whisper encoder classifier: the ``WhisperConfig`` fields it uses plus the extractor's.

    Defaults are those of ``transformers.WhisperConfig`` (whisper-tiny's encoder) and
    ``WhisperFeatureExtractor``, except ``num_labels``.

    Attributes:
        d_model, encoder_layers, encoder_attention_heads, encoder_ffn_dim, activation_function,
        max_source_positions, num_mel_bins, use_weighted_layer_sum, classifier_proj_size:
        as in ``transformers.WhisperConfig``.
        num_labels: classes.
        sample_rate, n_fft, hop_length, n_samples: the extractor's ``sampling_rate``, ``n_fft``,
            ``hop_length`` and ``chunk_length * sampling_rate``.
    """

    family: ClassVar[str] = "whisper"

    d_model: int = 384
    encoder_layers: int = 4
    encoder_attention_heads: int = 6
    encoder_ffn_dim: int = 1536
    activation_function: str = "gelu"
    max_source_positions: int = 1500
    num_mel_bins: int = 80
    use_weighted_layer_sum: bool = False
    classifier_proj_size: int = 256
    num_labels: int = 2
    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    n_samples: int = 480000

    def __post_init__(self) -> None:
        frames = self.n_samples // self.hop_length
        if frames != 2 * self.max_source_positions:
            raise ModelError(
                f"Whisper's encoder takes 2 * max_source_positions = {2 * self.max_source_positions} mel "
                f"frames, but n_samples {self.n_samples} / hop_length {self.hop_length} gives {frames}"
            )
        if self.num_labels < 1:
            raise ModelError(f"Whisper classifier needs num_labels >= 1, got {self.num_labels}")
        activation(self.activation_function)  # unknown names fail at construction

    @property
    def log_mel(self) -> LogMelConfig:
        return LogMelConfig(
            sample_rate=self.sample_rate, n_fft=self.n_fft, hop_length=self.hop_length,
            n_mels=self.num_mel_bins, n_samples=self.n_samples,
        )

    def input_policy(self) -> InputPolicy:
        return InputPolicy(length=self.n_samples, pad="zero", crop="start", pads_internally=True)


class Whisper(nnx.Module):
    """``WhisperForAudioClassification`` over waveforms. See the module docstring.

    Parameter paths (targets of ``converters/hf_whisper.py``): ``conv1``, ``conv2``,
    ``embed_positions`` (``[max_source_positions, d_model]``), ``layers/{i}/...`` (see
    :mod:`jsuff.models._transformer`), ``layer_norm``, ``layer_weights`` (only with
    ``use_weighted_layer_sum``), ``projector``, ``classifier``.
    """

    def __init__(self, config: WhisperConfig, rngs: nnx.Rngs):
        self.config = config
        d = config.d_model
        # Explicit (1, 1) padding pairs: PyTorch's Conv1d(padding=1), also for the strided conv.
        self.conv1 = nnx.Conv(config.num_mel_bins, d, kernel_size=(3,), padding=[(1, 1)], rngs=rngs)
        self.conv2 = nnx.Conv(d, d, kernel_size=(3,), strides=(2,), padding=[(1, 1)], rngs=rngs)
        self.embed_positions = random_normal(rngs, (config.max_source_positions, d))
        self.layers = nnx.List([
            PreNormBlock(
                d, config.encoder_attention_heads, config.encoder_ffn_dim, eps=TORCH_LAYER_NORM_EPS,
                act=config.activation_function, key_bias=False, scale_query=True, rngs=rngs,
            )
            for _ in range(config.encoder_layers)
        ])
        self.layer_norm = layer_norm(d, TORCH_LAYER_NORM_EPS, rngs)
        if config.use_weighted_layer_sum:
            n = config.encoder_layers + 1
            self.layer_weights = nnx.Param(jnp.full((n,), 1.0 / n, jnp.float32))
        self.projector = nnx.Linear(d, config.classifier_proj_size, rngs=rngs)
        self.classifier = nnx.Linear(config.classifier_proj_size, config.num_labels, rngs=rngs)

    def features(self, waveforms: jax.Array) -> jax.Array:
        """The extractor's ``input_features`` ``[B, num_mel_bins, 2 * max_source_positions]``."""
        return whisper_log_mel(waveforms, self.config.log_mel)

    def hidden_states(self, features: jax.Array) -> list[jax.Array]:
        """HF's encoder ``hidden_states``: the embeddings, then each layer's output, the last
        one after the final LayerNorm (``transformers`` ties it to ``last_hidden_state``)."""
        x = features.transpose(0, 2, 1)  # channels last: [B, frames, mel]
        x = gelu_exact(self.conv1(x))  # WhisperEncoder's F.gelu: the exact erf form
        x = gelu_exact(self.conv2(x))
        states = [x + self.embed_positions[...][None]]
        for layer in self.layers:
            states.append(layer(states[-1]))
        states[-1] = self.layer_norm(states[-1])
        return states

    def classify(self, features: jax.Array) -> jax.Array:
        """Logits from extractor-style features."""
        states = self.hidden_states(features)
        if self.config.use_weighted_layer_sum:
            w = jax.nn.softmax(self.layer_weights[...])
            x = jnp.einsum("l,lbtd->btd", w, jnp.stack(states))
        else:
            x = states[-1]
        return self.classifier(jnp.mean(self.projector(x), axis=1))

    def __call__(self, waveforms: jax.Array) -> jax.Array:
        return self.classify(self.features(waveforms))


def _build(config: Mapping[str, Any], rngs: nnx.Rngs) -> Whisper:
    return Whisper(WhisperConfig.from_mapping(config), rngs)


register(
    Architecture(
        "whisper",
        _build,
        "Whisper encoder classifier (HF WhisperForAudioClassification), log-mel front end",
        "whisper",
        renamed=ATTENTION_RENAMED,
    )
)

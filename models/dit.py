"""DiT: the diffusion transformer of Peebles & Xie (2023), "Scalable Diffusion Models with Transformers", as a score
network beside the U-Nets (config name ``"dit"``).

``(x (B, C, H, W), labels (B,)[, class_labels]) -> (B, C, H, W)``:

1. **Patchify** (section 3.2): the image, padded at the bottom and right with zeros up to a multiple of the patch size
   ``p`` (25x25 faces with ``p = 2`` become 26x26), is cut into ``(H / p) (W / p)`` patches, each mapped linearly
   (a ``p x p`` convolution of stride ``p``) to a token of ``hidden_size`` features, plus the fixed 2-D sine-cosine
   position embedding of its patch (as in MAE, He et al. 2022: half the features encode the row, half the column,
   each with Vaswani et al.'s frequencies ``10000^(-k / (d / 4))``). Without it the network would be blind to where
   a patch is: the transformer is equivariant under permutations of its tokens.
2. **Conditioning**: the noise-level label is embedded (the sinusoidal embedding of the labels, ``"positional"``:
   any label, VP's ``999 t``, DDPM's step, VE's ``sigma``, an SMLD index, EDM's ``ln(sigma) / 4``; or random Fourier
   features of ``log(labels)``, ``"fourier"``: labels must be noise scales), then an MLP; with ``num_classes = K`` a
   learned class embedding of ``K + 1`` rows is added (row ``K``, :attr:`DiT.null_label`, is "no label", for
   classifier-free guidance, as in :class:`models.NCSNpp`). The sum ``c`` conditions every block.
3. ``depth`` transformer blocks with **adaLN-Zero** (section 3.2, "adaLN-Zero block"): from ``c``, each block
   regresses a shift, a scale and a gate for its attention and its MLP,
   ``h += gate_a * Attn(LN(h) (1 + scale_a) + shift_a)``, ``h += gate_m * MLP(LN(h) (1 + scale_m) + shift_m)``, with
   the regression initialised to zero, so that every block starts as the identity. Attention is multi-head
   self-attention over all tokens through one fused call (:func:`models.layers.attention`); the MLP is
   ``hidden -> mlp_ratio * hidden -> hidden`` with tanh-GELU.
4. **Final layer**: adaptive LayerNorm (shift and scale from ``c``), a linear map of each token to its ``p x p x C``
   output patch, then unpatchify and crop to ``H x W``. The modulation and the linear map are zero-initialised too,
   so the initial output is exactly zero: a noise-predicting network starts at the prior-free score ``0`` and EDM's
   preconditioned one at the score of ``N(0, sigma_data^2 I)`` data.

``scale_by_sigma`` (with the Fourier embedding only) divides the output by the labels, the noise scales, as NCSN++
does for VE. ``centered=False`` maps inputs from ``[0, 1]`` to ``[-1, 1]`` first, as the U-Nets do.

Config (read only by :meth:`DiT.from_config`): ``data.image_size``, ``data.num_channels`` [3], ``data.centered``
[False]; ``model.nf`` (the hidden size, required), ``model.patch_size`` [2], ``model.depth`` [4],
``model.num_heads`` [4], ``model.mlp_ratio`` [4.0], ``model.embedding_type`` ['positional'],
``model.fourier_scale`` [16.0], ``model.scale_by_sigma`` [False]; ``model.class_conditional`` [False] (then
``num_classes = data.num_classes``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from base_lib.checks import check_bool, check_choice, check_finite_positive, check_positive_int
from base_lib.config import config_value

from .conditional_mlp import check_class_labels
from .embeddings import GaussianFourierProjection, check_image_inputs, sinusoidal_embedding
from .layers import attention
from .ncsnpp import class_count_from_config
from .registry import register_model

EMBEDDING_TYPES = ("positional", "fourier")

#: width of the sinusoidal (or Fourier) features of the noise label before the embedding MLP (DiT's 256)
FREQUENCY_DIM = 256


def sincos_position_embedding(hidden_size: int, grid_h: int, grid_w: int) -> Tensor:
    """The fixed 2-D sine-cosine position embedding ``(grid_h * grid_w, hidden_size)``, tokens in row-major order.

    Features ``[0, d/2)`` encode the row ``i``, ``[d/2, d)`` the column ``j``, each as ``[sin(pos w_k), cos(pos w_k)]``
    with ``w_k = 10000^(-k / (d / 4))``, ``k = 0..d/4 - 1`` (Vaswani et al. 2017, section 3.5, per axis as in MAE).
    ``hidden_size`` must be a multiple of 4.
    """
    if hidden_size % 4:
        raise ValueError(f"the 2-D sine-cosine position embedding needs hidden_size divisible by 4, got {hidden_size}")
    quarter = hidden_size // 4
    freqs = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64), indexing="ij"
    )

    def axis(pos: Tensor) -> Tensor:
        angles = pos.reshape(-1, 1) * freqs[None, :]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    return torch.cat([axis(rows), axis(cols)], dim=1).float()


def modulate(h: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """``h (1 + scale) + shift`` with one ``(B, d)`` shift and scale per image broadcast over its tokens ``(B, N, d)``."""
    return torch.addcmul(shift.unsqueeze(1), h, 1 + scale.unsqueeze(1))


class Attention(nn.Module):
    """Multi-head self-attention over the tokens ``(B, N, d)``: one fused call of :func:`models.layers.attention`."""

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads  # heads of hidden_size / num_heads features each
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)  # tokens -> queries, keys, values
        self.proj = nn.Linear(hidden_size, hidden_size)  # heads concatenated -> tokens

    def forward(self, h: Tensor) -> Tensor:
        batch, tokens, width = h.shape
        qkv = self.qkv(h).reshape(batch, tokens, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        out = attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, width))


class DiTBlock(nn.Module):
    """A transformer block with adaLN-Zero conditioning (Peebles & Xie 2023, Figure 3, right)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        hidden_mlp = int(round(hidden_size * mlp_ratio))
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)  # before attention (adaLN)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)  # before the MLP (adaLN)
        self.mlp = nn.Sequential(  # pointwise MLP of each token
            nn.Linear(hidden_size, hidden_mlp), nn.GELU(approximate="tanh"), nn.Linear(hidden_mlp, hidden_size)
        )
        # c -> (shift, scale, gate) of attention and of the MLP; zero-initialised: the block starts as the identity
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.modulation(c).chunk(6, dim=1)
        h = h + gate_a.unsqueeze(1) * self.attn(modulate(self.norm1(h), shift_a, scale_a))
        return h + gate_m.unsqueeze(1) * self.mlp(modulate(self.norm2(h), shift_m, scale_m))


class FinalLayer(nn.Module):
    """Adaptive LayerNorm then a linear map of each token to its output patch (``p * p * C`` values)."""

    def __init__(self, hidden_size: int, patch_values: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))  # c -> (shift, scale)
        self.linear = nn.Linear(hidden_size, patch_values)  # token -> output patch

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(h), shift, scale))


@register_model(name="dit")
class DiT(nn.Module):
    """Diffusion transformer ``(x (B, C, H, W), labels (B,)[, class_labels]) -> (B, C, H, W)``; see the module
    docstring."""

    def __init__(
        self,
        image_size: int,  # height = width of the inputs
        num_channels: int = 3,  # image channels C
        patch_size: int = 2,  # p: tokens are p x p patches (the image is zero-padded to a multiple of p)
        hidden_size: int = 96,  # d: features per token
        depth: int = 4,  # number of transformer blocks
        num_heads: int = 4,  # attention heads (hidden_size must be divisible by it)
        mlp_ratio: float = 4.0,  # MLP width / hidden_size
        embedding_type: str = "positional",  # noise label: "positional" (sinusoidal, any label) | "fourier" (of log sigma)
        fourier_scale: float = 16.0,  # std of the random Fourier frequencies ("fourier")
        scale_by_sigma: bool = False,  # divide the output by the labels, noise scales ("fourier" only)
        centered: bool = False,  # inputs in [-1, 1] (else [0, 1], mapped to 2x - 1)
        num_classes: int | None = None,  # class labels 0..K-1 plus the null label K (classifier-free guidance)
    ):
        super().__init__()
        self.image_size = check_positive_int("image_size", image_size)
        self.num_channels = check_positive_int("num_channels", num_channels)
        self.patch_size = check_positive_int("patch_size", patch_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.depth = check_positive_int("depth", depth)
        self.num_heads = check_positive_int("num_heads", num_heads)
        check_finite_positive("mlp_ratio", mlp_ratio)
        self.embedding_type = check_choice("embedding_type", embedding_type, EMBEDDING_TYPES)
        self.scale_by_sigma = check_bool("scale_by_sigma", scale_by_sigma)
        self.centered = check_bool("centered", centered)
        if self.patch_size > self.image_size:
            raise ValueError(f"patch_size={patch_size} must be at most image_size={image_size}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
        if hidden_size % 4:
            raise ValueError(f"hidden_size={hidden_size} must be divisible by 4 (the 2-D sine-cosine position embedding)")
        if self.scale_by_sigma and self.embedding_type != "fourier":
            raise ValueError(
                "scale_by_sigma=True divides the output by the labels, which must then be noise scales sigma: "
                "it needs embedding_type='fourier'"
            )
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes must be None or an integer >= 1, got {num_classes!r}")
        self.num_classes = num_classes
        self.grid = -(-self.image_size // self.patch_size)  # patches per side, after padding
        self.padding = self.grid * self.patch_size - self.image_size  # zero rows (bottom) and columns (right)

        self.patch_embed = nn.Conv2d(num_channels, hidden_size, patch_size, stride=patch_size)  # patch -> token
        self.register_buffer(  # fixed, not trained and not saved: a function of the shape alone
            "pos_embed", sincos_position_embedding(hidden_size, self.grid, self.grid)[None], persistent=False
        )
        if self.embedding_type == "fourier":
            check_finite_positive("fourier_scale", fourier_scale)
            self.fourier = GaussianFourierProjection(FREQUENCY_DIM // 2, scale=fourier_scale)  # features of log sigma
        else:
            self.fourier = None
        self.label_mlp = nn.Sequential(  # label features -> the conditioning c
            nn.Linear(FREQUENCY_DIM, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads, float(mlp_ratio)) for _ in range(depth))
        self.final = FinalLayer(hidden_size, patch_size * patch_size * num_channels)
        if num_classes is not None:
            self.class_embed = nn.Embedding(num_classes + 1, hidden_size)  # class (row K: the null label) -> c shift
        self._initialize()

    def _initialize(self) -> None:
        """DiT's initialisation: Xavier-uniform linear maps (the patch embedding as one), N(0, 0.02^2) label and
        class embeddings, and zero for every adaLN modulation and the output map (adaLN-Zero)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        weight = self.patch_embed.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        for layer in (self.label_mlp[0], self.label_mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        if self.num_classes is not None:
            nn.init.normal_(self.class_embed.weight, std=0.02)
        for modulation in (*(block.modulation for block in self.blocks), self.final.modulation):
            nn.init.zeros_(modulation[1].weight)
            nn.init.zeros_(modulation[1].bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)

    @classmethod
    def from_config(cls, config: Any) -> "DiT":
        """Build from ``config.data`` and ``config.model`` (fields and defaults in the module docstring)."""
        field = lambda name, default=...: config_value(config, f"model.{name}", default)  # noqa: E731
        image_size = config_value(config, "data.image_size")
        patch_size = field("patch_size", 2)
        if isinstance(patch_size, int) and isinstance(image_size, int) and not 0 < patch_size <= image_size:
            raise ValueError(
                f"config.model.patch_size={patch_size} must lie in [1, config.data.image_size={image_size}]"
            )
        hidden, heads = field("nf"), field("num_heads", 4)
        if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 and (hidden % heads or hidden % 4):
            raise ValueError(
                f"config.model.nf={hidden} (the hidden size) must be divisible by config.model.num_heads={heads} and by 4"
            )
        return cls(
            image_size=image_size,
            num_channels=config_value(config, "data.num_channels", 3),
            patch_size=patch_size,
            hidden_size=hidden,
            depth=field("depth", 4),
            num_heads=heads,
            mlp_ratio=field("mlp_ratio", 4.0),
            embedding_type=field("embedding_type", "positional"),
            fourier_scale=field("fourier_scale", 16.0),
            scale_by_sigma=field("scale_by_sigma", False),
            centered=config_value(config, "data.centered", False),
            num_classes=class_count_from_config(config),
        )

    @property
    def label_kinds(self) -> tuple[str, ...] | None:
        """``("sigma",)`` with the Fourier embedding of ``log sigma``; ``None`` (any label) with the positional one
        (:class:`models.Parameterization`)."""
        return ("sigma",) if self.embedding_type == "fourier" else None

    @property
    def null_label(self) -> int | None:
        """The class label standing for "no label" (the unconditional score), ``num_classes``; ``None`` when the
        network is not class-conditional."""
        return self.num_classes

    def _check_inputs(self, x: Tensor, labels: Tensor) -> None:
        check_image_inputs(x, labels, self.image_size, self.num_channels, self.patch_embed.weight.dtype, self.embedding_type)

    def condition(self, labels: Tensor, class_labels: Tensor | int | None, dtype: torch.dtype) -> Tensor:
        """The conditioning ``c (B, hidden_size)``: the label embedding plus the class embedding (``None``: the null
        label) of a class-conditional network."""
        if self.fourier is not None:
            features = self.fourier(torch.log(labels.to(dtype)))
        else:
            features = sinusoidal_embedding(labels, FREQUENCY_DIM, dtype=dtype)
        c = self.label_mlp(features)
        if self.num_classes is None:
            if class_labels is not None:
                raise ValueError(f"class_labels given to an unconditional {type(self).__name__}: build it with num_classes")
            return c
        return c + self.class_embed(check_class_labels(class_labels, labels.shape[0], self.num_classes, labels.device))

    def patchify(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, N, d)``: zero-pad to a multiple of the patch size, embed each patch, add positions."""
        if self.padding:
            x = F.pad(x, (0, self.padding, 0, self.padding))
        return self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed.to(x.dtype)

    def unpatchify(self, tokens: Tensor) -> Tensor:
        """``(B, N, p p C) -> (B, C, H, W)``: patches back in place, the padding cropped."""
        batch, p, grid, channels = tokens.shape[0], self.patch_size, self.grid, self.num_channels
        x = tokens.reshape(batch, grid, grid, p, p, channels).permute(0, 5, 1, 3, 2, 4)
        x = x.reshape(batch, channels, grid * p, grid * p)
        return x[:, :, : self.image_size, : self.image_size]

    def forward(self, x: Tensor, labels: Tensor, class_labels: Tensor | int | None = None) -> Tensor:
        """``labels``: the noise-level labels (module docstring); ``class_labels`` (class-conditional networks only):
        ``(B,)`` integers or one integer in ``[0, num_classes]`` (``num_classes`` = null), ``None`` = the null label."""
        self._check_inputs(x, labels)
        c = self.condition(labels, class_labels, self.patch_embed.weight.dtype)
        if not self.centered:
            x = 2 * x - 1.0
        h = self.patchify(x)
        for block in self.blocks:
            h = block(h, c)
        out = self.unpatchify(self.final(h, c))
        if self.scale_by_sigma:
            out = out / labels.to(out.dtype).reshape(-1, 1, 1, 1)
        return out.contiguous()

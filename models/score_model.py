"""The score model: a network, its SDE and the parameterization that turns the network's output into a score.

A network never sees the time ``t`` itself but a *label*, and its output is a noise prediction, a score or a
denoised image depending on how it was trained. That reading is a :class:`Parameterization`, registered by name
(:func:`register_parameterization`) and chosen once, from the config (:func:`parameterization_from_config`);
nothing else in the toolkit decides it. The 2021 reference's four conventions are registered:

=============  =============  ===============================================  ====================================
name           SDE            label                                            score
=============  =============  ===============================================  ====================================
``noise``      VP, sub-VP     ``t * 999`` (float)                              ``-eps_theta / std(t)``
``ddpm``       VP             ``t (N - 1) / T`` (float)                        ``-eps_theta / sqrt(1 - alpha_bar_i)``,
                                                                               ``i = floor(label)``: DDPM's table
``score``      VE             ``std(t)``, the kernel std                       ``s_theta``
``smld``       VE             ``round((T - t) (N - 1) / T)`` (int64;           ``s_theta``
                              index 0 is ``sigma_max``)
=============  =============  ===============================================  ====================================

Noise-prediction networks predict the ``eps`` of ``x(t) = alpha x(0) + std eps``, whose posterior mean is
``-std * score`` ([SDE] eq. (29) and Ho et al. 2020, eq. (11)). With ``T = 1`` (every reference config) integer
and VP labels are bit-identical to the reference's. ``smld`` networks know the ``N`` noise levels of their
training only (:attr:`Parameterization.continuous_time` is False): samplers that evaluate the score at arbitrary
times refuse them when they are built.

:class:`ScoreModel` holds the network (by reference: the optimizer and the EMA update its weights in place), the
SDE, the parameterization and the compute dtype, and gives the score ``s(x, t, y)``, the denoiser ``D(x, t, y)``
(Tweedie's mean of ``x(0)``) and a plain ``score_fn(x, t)`` for the samplers. ``y`` is a class label for
label-conditional networks (``model(x, labels, class_labels)`` with an integer ``null_label``); ``None`` is the
null label, the unconditional score. For a signal-conditioned network (one with a ``condition_map``,
:mod:`models.conditioning`: SR3's low-resolution image, WaveGrad's mel spectrogram) ``y`` is the signal
``c = condition_map(x0)`` ``(B, *signal_shape)``, bound as the network's third argument; it has no null value, so
``y=None`` is a ``ValueError``.
"""

from __future__ import annotations

import abc
import math
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn

from base_lib.config import config_value
from sde_lib import SDE, VESDE, VPSDE, EDMSDE, LinearSDE, ScoreFn, batch_broadcast, subVPSDE

from base_lib.checks import check_choice

from .conditioning import check_signal, condition_map_of
from .precision import MIXED_PRECISION, autocast, resolve_mixed_precision
from .registry import same_definition

NetworkFn = Callable[[Tensor, Tensor], Tensor]
"""``network_fn(x, labels)``: the network's raw output, shaped like ``x``."""

#: the time-embedding scale of continuously trained VP/sub-VP networks: labels are ``t * 999`` whatever ``N``
VP_CONTINUOUS_LABEL_SCALE = 999


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating-point dtype of ``model``'s parameters (then buffers; the default dtype if it has neither)."""
    return _parameter_dtype(model, torch.get_default_dtype())


def _parameter_dtype(model: nn.Module, default: torch.dtype) -> torch.dtype:
    """The floating-point dtype of ``model``'s parameters or buffers; ``default`` for a module that has none."""
    return next((p.dtype for p in (*model.parameters(), *model.buffers()) if p.is_floating_point()), default)


def check_model_output(out: Tensor, x: Tensor) -> Tensor:
    """``out`` if the network's output is shaped like its input ``x``, else ``ValueError`` naming both shapes."""
    if out.shape != x.shape:
        raise ValueError(f"the model returned shape {tuple(out.shape)}, expected the shape of x {tuple(x.shape)}")
    return out


def _unwrapped(network: nn.Module) -> nn.Module:
    """The network inside ``DistributedDataParallel``, whose attributes (``null_label``, ``label_kinds``) are read."""
    return network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network


def null_label(network: nn.Module) -> int | None:
    """The class label standing for "no label" of a label-conditional network (``network(x, labels,
    class_labels)``, also inside ``DistributedDataParallel``), or ``None`` for an unconditional network."""
    null = getattr(_unwrapped(network), "null_label", None)
    return null if isinstance(null, int) and not isinstance(null, bool) else None


def label_conditional(network: nn.Module) -> bool:
    """Whether ``network`` takes class labels (:func:`null_label` is an integer)."""
    return null_label(network) is not None


# ------------------------------------------------------------------------------------------ parameterizations
class Parameterization(abc.ABC):
    """How a network's labels and output relate to the time and the score of an SDE (module docstring)."""

    name: ClassVar[str]
    #: True when the network takes any ``t`` in ``(0, T]``; False when it knows the SDE's ``N`` levels only
    continuous_time: ClassVar[bool] = True
    #: the training objective of :mod:`train_lib.losses` this parameterization is trained with
    objective: ClassVar[str] = "dsm"
    #: the SDE classes it applies to
    sde_types: ClassVar[tuple[type[SDE], ...]] = (LinearSDE,)
    #: what the network's labels are (a network may declare the kinds it takes in ``label_kinds``): ``"time"``
    #: (``999 t``), ``"step"`` (a float step index), ``"sigma"`` (a noise scale), ``"index"`` (an int64 level
    #: index), ``"log_sigma"`` (EDM's ``ln(sigma) / 4``)
    label_kind: ClassVar[str] = "time"

    def check_sde(self, sde: SDE) -> None:
        """``ValueError`` when ``sde`` is not one this parameterization applies to."""
        if not isinstance(sde, self.sde_types):
            allowed = ", ".join(c.__name__ for c in self.sde_types)
            raise ValueError(f"the {self.name!r} parameterization applies to {allowed}, got {type(sde).__name__}")

    @classmethod
    def from_config(cls, config: Any) -> "Parameterization":
        """The parameterization with its options from ``config.model`` (none by default)."""
        return cls()

    def for_network(self, label_kinds: tuple[str, ...] | None) -> "Parameterization":
        """This parameterization as it feeds a network that takes ``label_kinds`` (``None``: any label); one that can
        give its labels in several forms returns the variant the network takes. By default, itself."""
        return self

    @abc.abstractmethod
    def score(self, network: NetworkFn, sde: Any, x: Tensor, t: Tensor) -> Tensor:
        """``grad_x log p_t(x)`` from ``network(x_in, labels)``; ``t`` is ``(B,)`` in the dtype of ``x``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


_PARAMETERIZATIONS: dict[str, type[Parameterization]] = {}


def register_parameterization(cls: type[Parameterization]) -> type[Parameterization]:
    """Class decorator: make a :class:`Parameterization` available by its ``name`` (``config.model.parameterization``)."""
    if not (isinstance(cls, type) and issubclass(cls, Parameterization)) or not getattr(cls, "name", None):
        raise ValueError(f"register_parameterization needs a Parameterization subclass with a name, got {cls!r}")
    known = _PARAMETERIZATIONS.get(cls.name)
    if known is not None and not same_definition(known, cls):
        raise ValueError(f"a parameterization is already registered as {cls.name!r}: {known.__qualname__}")
    _PARAMETERIZATIONS[cls.name] = cls
    return cls


def available_parameterizations() -> list[str]:
    """The registered parameterization names, sorted."""
    return sorted(_PARAMETERIZATIONS)


def _registered_class(name: str) -> type[Parameterization]:
    if not isinstance(name, str) or name not in _PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {name!r}; known: {', '.join(available_parameterizations())}")
    return _PARAMETERIZATIONS[name]


def get_parameterization(name: str, **options: Any) -> Parameterization:
    """The parameterization registered as ``name``, built with ``options``; ``ValueError`` listing the names."""
    return _registered_class(name)(**options)


@register_parameterization
class NoisePrediction(Parameterization):
    """``eps_theta(x, 999 t)`` predicts the noise; ``score = -eps_theta / std(t)`` with the SDE's kernel std."""

    name = "noise"
    sde_types = (VPSDE, subVPSDE)

    def score(self, network: NetworkFn, sde: Any, x: Tensor, t: Tensor) -> Tensor:
        out = check_model_output(network(x, t * VP_CONTINUOUS_LABEL_SCALE), x)
        return -out / batch_broadcast(sde.marginal_coeffs(t)[1], out)


@register_parameterization
class DDPMNoisePrediction(Parameterization):
    """DDPM's step-indexed noise prediction: label ``t (N - 1) / T``, ``score = -eps_theta / sqrt(1 - alpha_bar_i)``
    from the table at ``i = floor(label)``. The labels are floats, so the network takes any time."""

    name = "ddpm"
    objective = "ddpm"
    sde_types = (VPSDE,)
    label_kind = "step"

    def score(self, network: NetworkFn, sde: Any, x: Tensor, t: Tensor) -> Tensor:
        labels = t * (sde.N - 1) / sde.T
        std = sde._table("sqrt_1m_alphas_cumprod", t)[labels.long()]
        out = check_model_output(network(x, labels), x)
        return -out / batch_broadcast(std, out)


@register_parameterization
class ScoreOutput(Parameterization):
    """The network outputs the score at the noise scale it is given: label ``std(t)``, the kernel std."""

    name = "score"
    sde_types = (VESDE,)
    label_kind = "sigma"

    def score(self, network: NetworkFn, sde: Any, x: Tensor, t: Tensor) -> Tensor:
        return check_model_output(network(x, sde.marginal_coeffs(t)[1]), x)


@register_parameterization
class SMLDScore(Parameterization):
    """NCSN's step-indexed score: label ``round((T - t) (N - 1) / T)`` (index 0 is ``sigma_max``)."""

    name = "smld"
    continuous_time = False
    objective = "smld"
    sde_types = (VESDE,)
    label_kind = "index"

    def score(self, network: NetworkFn, sde: Any, x: Tensor, t: Tensor) -> Tensor:
        labels = torch.round((sde.T - t) * (sde.N - 1) / sde.T).long()
        return check_model_output(network(x, labels), x)


@register_parameterization
class EDMPreconditioning(Parameterization):
    """EDM's preconditioned denoiser (Karras et al. 2022, Table 1 and eq. (7)) for any linear SDE.

    In the scaled variable ``x~ = x / alpha`` with noise level ``sigma = std / alpha`` (the marginal is
    ``x(0) + sigma z``), ``D(x~; sigma) = c_skip x~ + c_out F(c_in x~, c_noise)`` with
    ``c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)``, ``c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)``,
    ``c_in = 1 / sqrt(sigma^2 + sigma_data^2)`` and ``c_noise = ln(sigma) / 4``, the network's label. ``D`` estimates
    ``E[x(0) | x(t)]``, so by Tweedie ``score = (alpha D - x) / std^2``. On EDM's SDE (``alpha = 1``, ``std = t``)
    this is the paper's ``EDMPrecond`` exactly. A network whose embedding takes noise scales (the Fourier embedding
    of ``log sigma`` of NCSN++ and the MLP) is given ``sigma`` itself: its embedding of ``log sigma = 4 c_noise`` is
    EDM's Fourier embedding of ``c_noise`` with a 4x frequency scale.
    """

    name = "edm"
    objective = "edm"
    label_kind = "log_sigma"

    def __init__(self, sigma_data: float = 0.5, sigma_labels: bool = False):
        sigma_data = float(sigma_data)
        if not (math.isfinite(sigma_data) and sigma_data > 0):
            raise ValueError(f"sigma_data must be a finite number > 0, got {sigma_data!r}")
        self.sigma_data = sigma_data  # the data's standard deviation (EDM: 0.5 for images in [-1, 1])
        self.sigma_labels = bool(sigma_labels)  # label the network with sigma instead of c_noise = ln(sigma) / 4
        self.label_kind = "sigma" if self.sigma_labels else "log_sigma"

    def for_network(self, label_kinds: tuple[str, ...] | None) -> "EDMPreconditioning":
        if label_kinds is not None and "log_sigma" not in label_kinds and "sigma" in label_kinds:
            return EDMPreconditioning(self.sigma_data, sigma_labels=True)
        return self

    @classmethod
    def from_config(cls, config: Any) -> "EDMPreconditioning":
        return cls(sigma_data=config_value(config, "model.sigma_data", 0.5))

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(c_skip, c_out, c_in, c_noise)`` at the noise levels ``sigma`` (Table 1 of the paper)."""
        total = sigma.square() + self.sigma_data**2
        return self.sigma_data**2 / total, sigma * self.sigma_data / total.sqrt(), total.rsqrt(), sigma.log() / 4

    def denoise(self, network: NetworkFn, scaled_x: Tensor, sigma: Tensor) -> Tensor:
        """``D(x~; sigma)`` of eq. (7) on the scaled variable."""
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        labels = sigma if self.sigma_labels else c_noise
        out = check_model_output(network(batch_broadcast(c_in, scaled_x) * scaled_x, labels), scaled_x)
        return batch_broadcast(c_skip, scaled_x) * scaled_x + batch_broadcast(c_out, scaled_x) * out

    def score(self, network: NetworkFn, sde: Any, x: Tensor, t: Tensor) -> Tensor:
        alpha, std = sde.marginal_coeffs(t)
        denoised = self.denoise(network, x / batch_broadcast(alpha, x), std / alpha)
        return (batch_broadcast(alpha, x) * denoised - x) / batch_broadcast(std.square(), x)

    def __repr__(self) -> str:
        labels = ", sigma_labels=True" if self.sigma_labels else ""
        return f"EDMPreconditioning(sigma_data={self.sigma_data}{labels})"


#: the reading of ``training.continuous`` for each SDE, the reference's for its three: (continuous, discrete) names
REFERENCE_PARAMETERIZATIONS: dict[type[SDE], tuple[str, str | None]] = {
    VPSDE: ("noise", "ddpm"),
    subVPSDE: ("noise", None),  # the reference refuses discrete training of sub-VP
    VESDE: ("score", "smld"),
    EDMSDE: ("edm", None),  # EDM's diffusion is trained with EDM's preconditioning
}


def _reference_names(sde: SDE) -> tuple[str, str | None] | None:
    """The (continuous, discrete) parameterization names of ``sde``'s family, or ``None`` for another SDE."""
    return next((names for sde_type, names in REFERENCE_PARAMETERIZATIONS.items() if isinstance(sde, sde_type)), None)


def default_parameterization(sde: SDE) -> Parameterization:
    """The continuous-time parameterization of ``sde``: the reference's (``noise`` for VP and sub-VP, ``score`` for
    VE), ``edm`` for EDM's SDE."""
    names = _reference_names(sde)
    if names is None:
        raise ValueError(
            f"{type(sde).__name__} has no default parameterization; name one of {', '.join(available_parameterizations())}"
        )
    return get_parameterization(names[0])


def resolve_parameterization(sde: SDE, parameterization: Parameterization | str | None = None) -> Parameterization:
    """``parameterization`` as an object checked to apply to ``sde``: a registered name, an instance, or ``None``
    for :func:`default_parameterization`."""
    if parameterization is None:
        return default_parameterization(sde)
    if isinstance(parameterization, str):
        parameterization = get_parameterization(parameterization)
    if not isinstance(parameterization, Parameterization):
        raise ValueError(f"parameterization must be a models.Parameterization or a registered name, got {parameterization!r}")
    parameterization.check_sde(sde)
    return parameterization


def parameterization_from_config(config: Any, sde: SDE) -> Parameterization:
    """The parameterization of the network of ``config``: ``config.model.parameterization`` when set, else the
    reference's reading of ``config.training.continuous`` for ``sde`` (:data:`REFERENCE_PARAMETERIZATIONS`).

    This is the one place where ``training.continuous`` is read. ``ValueError`` naming the field when the named
    parameterization does not apply to the SDE.
    """
    name = config_value(config, "model.parameterization", None)
    if name is None:
        names = _reference_names(sde)
        if names is None:
            raise ValueError(
                f"config.model.parameterization must be set for the SDE {type(sde).__name__}; known: "
                f"{', '.join(available_parameterizations())}"
            )
        name = names[0] if bool(config_value(config, "training.continuous", True)) else names[1]
        if name is None:
            raise ValueError(
                f"config.training.continuous=False: {type(sde).__name__} has no step-indexed network convention (the "
                "reference trains it in continuous time only); set training.continuous=True"
            )
    try:
        return resolve_parameterization(sde, _registered_class(name).from_config(config))
    except ValueError as error:
        raise ValueError(f"config.model.parameterization: {error}") from None


def _label_kinds(network: nn.Module) -> tuple[str, ...] | None:
    return getattr(_unwrapped(network), "label_kinds", None)


def check_labels_accepted(network: nn.Module, parameterization: Parameterization) -> None:
    """``ValueError`` when ``network`` declares the label kinds it takes (``label_kinds``) and the parameterization's
    is not one of them (e.g. a Fourier embedding of ``log sigma`` given integer level indices)."""
    inner = _unwrapped(network)
    kinds = getattr(inner, "label_kinds", None)
    if kinds is not None and parameterization.label_kind not in kinds:
        raise ValueError(
            f"the network {type(inner).__name__} takes {' or '.join(kinds)} labels, but the {parameterization.name!r} "
            f"parameterization gives {parameterization.label_kind} labels (training.continuous / model.parameterization "
            "and the network's embedding disagree)"
        )


# ------------------------------------------------------------------------------------------ the score model
class ScoreModel:
    """A score network read through its :class:`Parameterization`: ``s(x, t, y)``, ``D(x, t, y)``, ``score_fn``.

    The network is held by reference, not copied: weights the optimizer or the EMA write are the ones used.
    Checkpoints store the network's ``state_dict`` alone, in the reference's format.
    """

    def __init__(
        self,
        network: nn.Module,
        sde: SDE,
        parameterization: Parameterization | str | None = None,
        dtype: torch.dtype | None = None,
        mixed_precision: str = "no",
    ):
        if not isinstance(network, nn.Module):
            raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}")
        if not isinstance(sde, SDE):
            raise ValueError(f"sde must be an sde_lib.SDE, got {type(sde).__name__}")
        parameterization = resolve_parameterization(sde, parameterization).for_network(_label_kinds(network))
        check_labels_accepted(network, parameterization)
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype}")
        check_choice("mixed_precision", mixed_precision, MIXED_PRECISION)
        self.network = network  # the score network, called network(x, labels[, class_labels])
        self.sde = sde  # the forward diffusion the network was trained on
        self.parameterization = parameterization  # labels and output -> score (given, or the SDE's default)
        self.dtype = dtype  # the network's compute dtype; None: its parameters' (x's for a parameterless network)
        self.null_label = null_label(network)  # the unconditional class label; None: an unconditional network
        self.condition_map = condition_map_of(network)  # x0 -> the signal the network takes; None: it takes none
        self.mixed_precision = mixed_precision  # autocast of the network call: 'no', 'bf16' or 'fp16' (CUDA)

    @classmethod
    def from_config(cls, config: Any, network: nn.Module, sde: SDE) -> "ScoreModel":
        """The score model of ``network`` trained as ``config`` says (:func:`parameterization_from_config`), sampled
        in the mixed precision of ``config.sampling.mixed_precision`` [``'auto'``] on the network's device
        (:func:`models.precision.resolve_mixed_precision`)."""
        device = next((p.device for p in (*network.parameters(), *network.buffers())), torch.device("cpu"))
        mixed_precision = resolve_mixed_precision(
            config_value(config, "sampling.mixed_precision", "auto"), device,
            name="config.sampling.mixed_precision",
        )
        return cls(network, sde, parameterization_from_config(config, sde), mixed_precision=mixed_precision)

    def in_precision(self, mixed_precision: str) -> "ScoreModel":
        """This score model (same network, SDE, parameterization and dtype) with the network called in
        ``mixed_precision`` (``'no'``: full precision, e.g. for a likelihood)."""
        return ScoreModel(self.network, self.sde, self.parameterization, self.dtype, mixed_precision)

    def network_fn(self, y: Tensor | int | None = None, train: bool = False) -> NetworkFn:
        """``network(x, labels)`` with the class labels or the signal ``y`` bound and the network put in train or eval
        mode; in :attr:`mixed_precision` the call runs under autocast and its output is cast back to the dtype of
        ``x``."""
        network, mixed_precision, condition_map = self.network, self.mixed_precision, self.condition_map
        if condition_map is not None and not isinstance(y, Tensor):
            raise ValueError(
                f"y: the network {type(network).__name__} is conditioned on a {condition_map.name!r} signal; give "
                f"y = condition_map(x0), a tensor (B, *signal_shape), got {type(y).__name__}"
            )
        if condition_map is None and self.null_label is None and y is not None:
            raise ValueError(f"class labels y were given to the unconditional network {type(network).__name__}")
        bound = () if self.null_label is None and condition_map is None else (y,)

        def call(x: Tensor, labels: Tensor) -> Tensor:
            if condition_map is not None:
                class_labels = (check_signal(y, x, condition_map, name="y").to(x.dtype),)
            else:
                class_labels = bound
            network.train(train)
            if mixed_precision == "no":
                return network(x, labels, *class_labels)
            with autocast(mixed_precision, x.device):
                out = network(x, labels, *class_labels)
            return out.to(x.dtype)  # the parameterization's arithmetic stays in the compute dtype

        return call

    def score(self, x: Tensor, t: Tensor | float, y: Tensor | int | None = None, train: bool = False) -> Tensor:
        """``grad_x log p_t(x | y)`` (``y=None``: unconditional) at ``t`` ``(B,)`` or a number, in the dtype of ``x``.

        ``x`` and ``t`` are cast to the compute dtype before the labels are formed, and the score back to the
        dtype of ``x`` (a float32 network inside a float64 sampler). ``train`` puts the network in training mode.
        Gradients are left enabled: likelihoods and losses differentiate through the score.
        """
        dtype = self.dtype if self.dtype is not None else _parameter_dtype(self.network, x.dtype)
        inputs = x.to(dtype)
        t = self.sde._check_xt(inputs, torch.as_tensor(t, dtype=dtype, device=x.device))
        return self.parameterization.score(self.network_fn(y, train), self.sde, inputs, t).to(x.dtype)

    def denoise(self, x: Tensor, t: Tensor | float, y: Tensor | int | None = None, train: bool = False) -> Tensor:
        """Tweedie's ``E[x(0) | x(t) = x] = (x + std^2 s(x, t)) / alpha`` for a linear SDE ``x(t) = alpha x(0) + std z``."""
        t = self.sde._check_xt(x, torch.as_tensor(t, dtype=x.dtype, device=x.device))
        alpha, std = self.sde.marginal_coeffs(t)
        score = self.score(x, t, y, train)
        return (x + batch_broadcast(std.square(), x) * score) / batch_broadcast(alpha, x)

    def score_fn(self, y: Tensor | int | None = None) -> ScoreFn:
        """The plain ``score_fn(x, t)`` a sampler takes: :meth:`score` in eval mode with the class labels or the signal
        ``y`` bound (a signal-conditioned network: ``y = condition_map(x0)`` of the examples the samples are drawn for,
        one per sample).

        With a ``y`` of one row per sample, the function has ``restrict(rows) -> score_fn``: the same score for the
        samples ``rows`` only, for solvers that step a shrinking subset of the batch (:func:`samplers.ode_sample`'s
        torch solvers)."""

        def score_fn(x: Tensor, t: Tensor) -> Tensor:
            return self.score(x, t, y)

        if isinstance(y, Tensor) and y.ndim >= 1:
            score_fn.restrict = lambda rows: self.score_fn(y.index_select(0, rows.to(y.device)))
        return score_fn

    def __repr__(self) -> str:
        return f"ScoreModel({type(self.network).__name__}, {self.sde!r}, {self.parameterization!r})"

"""Score-network benchmark: full-size CIFAR-10 NCSN++ (VE) and DDPM++ (VP), forward and training step, CPU or CUDA.

The networks are those of ``configs/ve/cifar10_ncsnpp_continuous`` and ``configs/vp/cifar10_ddpmpp_continuous``, and
``digits_ddpmpp`` (``configs/vp/digits_ddpmpp_continuous``, the small DDPM++ of the README's job, 1x8x8 images),
``digits_dit`` (``configs/vp/digits_dit_continuous``, the DiT of the same size) and ``faces_ddpmpp`` / ``faces_dit``
(``configs/vp/faces_*_continuous``, 1x25x25 images).

For each model it prints the parameter count, the forward time per image (inference: ``torch.inference_mode``,
eval mode), the forward + backward time per image (training: train mode, loss ``mean(out^2)``), the peak memory of
each, and the speed-up over the 2021 reference. Times are the median (and minimum) over ``--repeats`` timed calls
after one warm-up call. Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on the CPU the peak of the tensor
memory allocated during the call above what was allocated before it (from the profiler's allocation records, at
operator granularity), the parameters themselves not included; the process's peak resident size is printed last.

``--compile`` times a ``torch.compile``'d copy of our network (:func:`models.compiled.compile_network`, mode
``--compile-mode``) beside the eager one, interleaved, and prints the cost of compilation (the first call's time
less a timed call's) and the eager / compiled speed ratio of each mode. ``--images-per-second`` adds images/s.

The reference figure is either measured here (``--reference-repo PATH`` pointing at a checkout of
yang-song/score_sde_pytorch: its networks are built from the same configs, given the same weights, their outputs
compared with ours, and timed interleaved with ours), or the issue's figure of 170 ms per image for a forward pass
at batch 4 on 2 CPU threads (labelled as such).

    python benchmarks/models.py [--threads 2] [--batch 4] [--repeats 5] [--models ncsnpp_ve ddpmpp_vp digits_ddpmpp]
                                [--device auto|cpu|cuda] [--bf16] [--no-channels-last] [--no-winograd]
                                [--compile] [--compile-mode default|reduce-overhead|max-autotune] [--no-backward]
                                [--reference-repo PATH] [--clock wall|cpu]

(default models: the two CIFAR-10 nets)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import os
import resource
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import models  # noqa: E402
from configs.ve import cifar10_ncsnpp_continuous  # noqa: E402
from configs.vp import cifar10_ddpmpp_continuous, digits_ddpmpp_continuous  # noqa: E402
from configs.vp import digits_dit_continuous, faces_ddpmpp_continuous, faces_dit_continuous  # noqa: E402
from models import winograd  # noqa: E402
from models.compiled import COMPILE_MODES, compile_network  # noqa: E402

CONFIGS = {"ncsnpp_ve": cifar10_ncsnpp_continuous, "ddpmpp_vp": cifar10_ddpmpp_continuous,
           "digits_ddpmpp": digits_ddpmpp_continuous, "digits_dit": digits_dit_continuous,
           "faces_ddpmpp": faces_ddpmpp_continuous, "faces_dit": faces_dit_continuous}
DEFAULT_MODELS = ["ncsnpp_ve", "ddpmpp_vp"]
RECORDED_REFERENCE_MS = 170.0  # the reference's forward pass measured before, batch 4, 2 CPU threads, ms per image
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


# ---------------------------------------------------------------------------------------------- the reference


def import_reference(repo: Path) -> types.ModuleType:
    """The reference's ``models`` package, imported from ``repo`` under the name ``score_sde_reference_models``.

    RUNTIME SHIM (the only change to the reference): its ``op`` package JIT-compiles CUDA extensions when imported,
    which cannot work on a machine without CUDA. While ``op`` is imported, ``torch.utils.cpp_extension.load`` is
    replaced by a function returning ``None``; the reference's own CPU code path (``upfirdn2d_native``, which its
    ``upfirdn2d`` uses for CPU tensors) is then what runs. The reference's ``import sde_lib`` finds this
    repository's ``sde_lib`` (only needed to import; the benchmark does not call the code that uses it).
    """
    import torch.utils.cpp_extension as cpp_extension

    repo = repo.resolve()
    if not (repo / "models" / "ncsnpp.py").is_file() or not (repo / "op" / "upfirdn2d.py").is_file():
        raise SystemExit(f"--reference-repo {repo}: not a checkout of yang-song/score_sde_pytorch")
    sys.path.append(str(repo))  # after this repository: `op` is found there, nothing of ours is shadowed
    build = cpp_extension.load
    cpp_extension.load = lambda *args, **kwargs: None  # shim: no extension build (CPU path only)
    try:
        import op  # noqa: F401  - the reference's op package, CUDA extension not built
    finally:
        cpp_extension.load = build
    name = "score_sde_reference_models"
    spec = importlib.util.spec_from_file_location(
        name, repo / "models" / "__init__.py", submodule_search_locations=[str(repo / "models")]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    for module in ("ncsnpp", "ddpm", "utils"):
        importlib.import_module(f"{name}.{module}")
    return package


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Weights of unit scale (``N(0, 1 / fan_in)``, GroupNorm scales near 1, biases ``N(0, 0.01)``), so that every
    branch contributes to the output and a parity check means something (the configs' ``init_scale = 0`` makes
    the last layer of every branch ~1e-10 at initialisation)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                fan_in = p.shape[0] if name.endswith(".W") else p[0].numel()  # NIN.W is stored (in, out)
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
            elif "GroupNorm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


# ---------------------------------------------------------------------------------------------- measurement


def example_inputs(key: str, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of the config's shape and labels as the score functions pass them: VE, sigma in [1, 50] and
    x = data + noise; VP, labels ``t * 999`` and centred data."""
    gen = torch.Generator().manual_seed(1)
    data = CONFIGS[key].get_config().data
    x = torch.rand(batch, data.num_channels, data.image_size, data.image_size, generator=gen)
    if key == "ncsnpp_ve":
        labels = torch.exp(torch.empty(batch).uniform_(0.0, 3.9, generator=gen))
        x = x + labels[:, None, None, None] * torch.randn(x.shape, generator=gen)
    else:
        labels = torch.rand(batch, generator=gen) * 999
        x = 2 * x - 1
    return x.to(device), labels.to(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, clock: Callable[[], float] = time.perf_counter) -> float:
    synchronize(device)
    start = clock()
    fn()
    synchronize(device)
    return clock() - start


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated during ``fn()`` above those allocated before (see the module docstring)."""
    if device.type == "cuda":
        synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # net bytes allocated by each operator itself (its children excluded) and by frees outside operators, in time
    # order: live tensor memory at operator granularity
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def forward_fn(model, x, labels, autocast) -> Callable[[], object]:
    def run():
        with torch.inference_mode(), autocast():
            return model(x, labels)

    return run


def train_step_fn(model, x, labels, autocast) -> Callable[[], object]:
    def run():
        model.zero_grad(set_to_none=True)
        with autocast():
            loss = model(x, labels).float().square().mean()
        loss.backward()

    return run


# ---------------------------------------------------------------------------------------------- main


def build_models(key: str, args, device: torch.device, reference) -> dict[str, torch.nn.Module]:
    config = CONFIGS[key].get_config()
    config.device = str(device)
    ours = models.create_model(config)
    built = {"ours": ours}
    if reference is not None:
        ref = reference.utils.get_model(config.model.name)(config)
        randomize_(ref)
        models.load_reference_weights(ours, ref.state_dict())
        built["reference"] = ref.to(device)
    else:
        randomize_(ours)
    ours.to(device)
    if not args.channels_last:
        ours.to(memory_format=torch.contiguous_format)
    return built


def run_model(key: str, args, device: torch.device, reference) -> None:
    if reference is not None and key not in ("ncsnpp_ve", "ddpmpp_vp"):
        reference = None  # the reference is compared on its own CIFAR-10 configs only
    built = build_models(key, args, device, reference)
    ours = built["ours"]
    x, labels = example_inputs(key, args.batch, device)
    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.bf16 else contextlib.nullcontext
    )
    params = sum(p.numel() for p in ours.parameters())
    print(f"\n{key}: {CONFIGS[key].__name__.split('.')[-1]}, {params:,} parameters, batch {args.batch}")
    if "reference" in built:
        with torch.inference_mode(), autocast():
            expected = built["reference"].eval()(x, labels).float()
            out = ours.eval()(x, labels).float()
        error = float((out - expected).abs().max() / max(1.0, float(expected.abs().max())))
        print(f"  parity with the reference (same weights): normalised max error {error:.2e} (tolerance 1e-4)")
    if args.compile:  # a compiled copy beside the eager network: same weights, timed interleaved with it
        built["compiled"] = compile_network(copy.deepcopy(ours), args.compile_mode)
    runs = {name: built[name] for name in ("ours", "compiled", "reference") if name in built}
    results: dict[str, dict[str, float]] = {}
    modes = [("forward", forward_fn, "eval")] + ([] if args.no_backward else [("fwd+bwd", train_step_fn, "train")])
    for mode, make, train_mode in modes:
        fns, first = {}, {}
        for name, model in runs.items():
            model.train(train_mode == "train")
            in_float32 = name == "reference" and args.reference_float32  # the reference as its users run it
            fns[name] = make(model, x, labels, contextlib.nullcontext if in_float32 else autocast)
            first[name] = timed(fns[name], device)  # warm-up (and compilation)
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(args.repeats):  # interleaved, so that a shared machine's load hits both alike
            for name, fn in fns.items():
                times[name].append(timed(fn, device, CLOCKS[args.clock]) / args.batch * 1e3)
        for name, fn in fns.items():
            med, low = statistics.median(times[name]), min(times[name])
            mem = peak_memory(fn, device) / 2**20
            results.setdefault(name, {})[mode] = med
            rate = f"   {1e3 / med:8.1f} images/s" if args.images_per_second else ""
            print(f"  {name:9s} {mode:8s} {med:8.1f} ms/image (min {low:7.1f})   peak {mem:8.1f} MiB{rate}")
        if "compiled" in fns:
            compile_s = first["compiled"] - statistics.median(times["compiled"]) * args.batch / 1e3
            ratio = results["ours"][mode] / results["compiled"][mode]
            if "compiled" in built and mode == "forward":
                with torch.inference_mode(), autocast():
                    expected = ours.eval()(x, labels).float()
                    error = (built["compiled"].eval()(x, labels).float() - expected).abs().max()
                print(f"  compiled vs eager output: normalised max error "
                      f"{float(error / max(1.0, float(expected.abs().max()))):.2e}")
            print(f"  torch.compile ({args.compile_mode}) {mode}: compilation {compile_s:.1f} s (first call "
                  f"{first['compiled']:.1f} s); eager / compiled time {ratio:.2f}x")
    if key not in ("ncsnpp_ve", "ddpmpp_vp"):
        return  # no reference figure for the small networks
    reference_ms, label = (
        (results["reference"]["forward"], "measured here")
        if "reference" in results
        else (RECORDED_REFERENCE_MS, "a figure recorded before, 2 threads, batch 4")
    )
    comparable = "reference" in results or (device.type == "cpu" and args.threads == 2 and args.batch == 4)
    print(f"  forward speed-up over the reference: {reference_ms / results['ours']['forward']:.2f}x "
          f"(reference {reference_ms:.1f} ms/image, {label}{'' if comparable else '; NOT comparable: other settings'})")
    if "reference" in results and "fwd+bwd" in results["reference"]:
        ratio = results["reference"]["fwd+bwd"] / results["ours"]["fwd+bwd"]
        print(f"  fwd+bwd speed-up over the reference: {ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per model and mode")
    parser.add_argument("--models", nargs="+", choices=list(CONFIGS), default=DEFAULT_MODELS)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: CUDA when present, else the CPU")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--reference-float32", action="store_true",
                        help="with --bf16: time the reference in float32 (its own precision), ours in bf16")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="channels-last weights and activations (the models' default)")
    parser.add_argument("--winograd", action=argparse.BooleanOptionalAction, default=None,
                        help="Winograd F(4x4, 3x3) for CPU inference (models.winograd; default: the toolkit's, off on "
                        "AVX-512 CPUs)")
    parser.add_argument("--compile", action="store_true",
                        help="also time a torch.compile'd copy of our model (models.compiled.compile_network)")
    parser.add_argument("--compile-mode", choices=[m for m in COMPILE_MODES if m != "none"], default="default",
                        help="the torch.compile mode of --compile")
    parser.add_argument("--images-per-second", action="store_true", help="also print images/s")
    parser.add_argument("--no-backward", action="store_true", help="skip the forward + backward timing")
    parser.add_argument("--reference-repo", type=Path, help="a checkout of yang-song/score_sde_pytorch to time too")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall",
                        help="wall time, or the process's CPU time (with --threads 1 on a shared machine: not "
                             "inflated by other processes' preemption)")
    args = parser.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.clock == "cpu" and args.device == "cuda":
        raise SystemExit("--clock cpu times CPU work only; use the wall clock on CUDA")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    torch.set_num_threads(args.threads)
    if args.winograd is not None:
        winograd.set_winograd_enabled(args.winograd)
    device = torch.device(args.device)
    reference = import_reference(args.reference_repo) if args.reference_repo else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"torch {torch.__version__}, {name}, float32{' + bf16 autocast' if args.bf16 else ''}, "
          f"{'channels-last' if args.channels_last else 'contiguous'}, winograd {'on' if winograd.winograd_enabled() else 'off'}"
          f"{f', torch.compile {args.compile_mode!r} beside eager' if args.compile else ''}; {args.clock} clock; "
          f"load average {os.getloadavg()[0]:.2f}")
    for key in args.models:
        run_model(key, args, device, reference)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nprocess peak resident memory: {maxrss:.0f} MiB; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

"""Benchmark onnxlrp against onnxruntime's forward pass, PyTorch and Zennit.

For each model (ResNet-18, VGG-16-BN, MobileNetV2 at 224x224, see ``bench_models.py``), batch size
and composite it measures, best of ``--repeat`` timed calls after one warm-up call:

- ``ORT fwd``: onnxruntime running the exported model (forward only);
- ``onnxlrp``: ``onnxlrp.Explainer(path, composite=..., threads=T).explain(x)`` (forward + LRP);
- ``torch fwd``: the PyTorch model's forward pass (``torch.inference_mode``);
- ``Zennit``: Zennit 0.5.1's ``Gradient`` attributor with the same composite (forward + LRP).

Every measurement runs in its own subprocess, so that its memory is its own: ``peak MB`` is the
peak resident set size during the first (warm-up) call above the resident size once the model
is loaded (compiled) and the input made (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``
after the setup); ``setup MB`` is what loading the model (compiling, for onnxlrp) left resident.
On CUDA, GPU memory is onnxruntime's / torch's device memory for this process (``nvidia-smi``,
or torch's allocator statistics).

``lrp/fwd`` divides onnxlrp's time by onnxruntime's forward time measured in the same subprocess,
the two calls alternating (so that it holds on a machine whose load changes); ``ORT fwd ms`` is the
forward pass measured on its own.

Thread count: ``--threads`` (default 2) is used by every engine, ``torch.set_num_threads`` and
onnxruntime's ``intra_op_num_threads`` alike. With ``--device cuda`` onnxruntime runs on its CUDA
provider with I/O binding (the input copied to the device once, every output left there; onnxlrp
through ``Explainer.explain_on_device``) and torch on cuda, every engine in real float32 (TF32
off in onnxruntime's CUDA provider and in torch). ``--precision float16`` runs onnxlrp in
its float16 mode (for GPUs; on the CPU onnxruntime runs many float16 ops in float32 behind casts).

::

    python tools/bench.py                                   # everything (long on 2 CPU cores)
    python tools/bench.py --models resnet18 --batches 8 --composites epsilon --repeat 3
    python tools/bench.py --profile --models resnet18 --batches 8 \\
        --composites epsilon-plus-flat,epsilon-gamma-box   # where onnxlrp's time goes

The markdown table goes to stdout, then a table of the targets (lrp/fwd per composite, zennit/lrp,
memory; on cuda at batch 32) and whether they are met; ``--json FILE`` also writes the raw
results, ``--report FILE`` prints both tables again. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = ("resnet18", "vgg16_bn", "mobilenet_v2")  # the default set; also "resnet50"
COMPOSITES = ("epsilon", "epsilon-plus-flat", "epsilon-gamma-box")
ENGINES = ("ort", "lrp", "torch", "zennit")
BOX = {"low": -3.0, "high": 3.0}  # epsilon-gamma-box bounds: the inputs are clipped to [-3, 3]
RESULT = "BENCH-RESULT "
PAIRED_ROUND = 3  # calls of each engine per round when onnxlrp alternates with the forward pass


# ------------------------------------------------------------------------------------------------
# memory


def _status(key: str) -> int:
    """``key`` (VmRSS, VmHWM) of this process from /proc/self/status, in bytes (0 if unknown)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) * 1024 if match else 0


def rss() -> int:
    return _status("VmRSS")


def release_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc), so that memory freed during the
    setup is not silently reused by the measured calls and left out of their peak."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak() -> bool:
    """Reset the peak resident set size (VmHWM) to the current one; False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak() -> int:
    if _status("VmHWM"):
        return _status("VmHWM")
    import resource  # fallback: lifetime peak (includes the setup)

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def gpu_process_memory() -> int | None:
    """Device memory used by this process (bytes), from nvidia-smi; None if unavailable."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(os.getpid()):
            return int(parts[1]) * 2**20
    return 0


# ------------------------------------------------------------------------------------------------
# workers: one measurement each, in a fresh process


def _require_cuda(session) -> None:
    if "CUDAExecutionProvider" not in session.get_providers():
        raise RuntimeError(f"onnxruntime's CUDA provider is not available: {session.get_providers()}")


def _setup_engine(job: dict):
    """Build what ``job`` measures; return ``(call, extra)`` where ``call()`` runs it once."""
    sys.path.insert(0, str(HERE))

    engine, threads, device = job["engine"], job["threads"], job["device"]
    batch, path = job["batch"], job["path"]
    extra: dict = {}
    if engine in ("ort", "lrp"):
        import onnxruntime as ort
        from bench_models import make_input

        x = make_input(batch, seed=2).numpy()
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else None
        providers = providers or ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        if engine == "lrp":
            import onnxlrp

            params = BOX if job["composite"] == "epsilon-gamma-box" else {}
            start = time.perf_counter()
            explainer = onnxlrp.Explainer(
                path,
                composite=job["composite"],
                providers=providers,
                precision=job.get("precision", "float32"),
                session_options=options,
                **params,
            )
            extra["compile_s"] = time.perf_counter() - start
            extra["compiled_nodes"] = len(explainer.compiled.model.graph.node)
            if device != "cuda":
                return (lambda: explainer.explain(x)), extra
            _require_cuda(explainer.session)
            x_on_device = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)  # copied once, as in a loop
            return (lambda: explainer.explain_on_device(x_on_device)), extra
        from onnxlrp.runtime import exact_float32  # the Explainer's arithmetic: no TF32 on CUDA

        session = ort.InferenceSession(path, options, providers=exact_float32(providers))
        feeds = {session.get_inputs()[0].name: x}
        if device != "cuda":
            return (lambda: session.run(None, feeds)), extra
        _require_cuda(session)
        binding = session.io_binding()  # the input copied to the device once, the outputs left there
        x_on_device = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
        binding.bind_ortvalue_input(session.get_inputs()[0].name, x_on_device)
        for output in session.get_outputs():
            binding.bind_output(output.name, "cuda", 0)

        def run_bound():
            session.run_with_iobinding(binding)  # synchronous: returns when the device is done
            binding.synchronize_outputs()

        return run_bound, extra

    import torch

    torch.set_num_threads(threads)
    torch.backends.cudnn.allow_tf32 = False  # float32 arithmetic on GPUs too, as onnxruntime's
    torch.backends.cuda.matmul.allow_tf32 = False
    from bench_models import build, enable_zennit_sums, install_torchvision_shim

    model, x = build(job["model"], batch=batch)
    dev = torch.device(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if engine == "torch":
        model, x = model.to(dev), x.to(dev)

        def forward():
            with torch.inference_mode():
                model(x)
            sync()

        return forward, extra

    install_torchvision_shim()
    from zennit.attribution import Gradient
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat, LayerMapComposite, layer_map_base
    from zennit.rules import Epsilon
    from zennit.types import Linear

    model, x = enable_zennit_sums(model).to(dev), x.to(dev)
    canonizers = [SequentialMergeBatchNorm()]
    name = job["composite"]
    if name == "epsilon":
        composite = LayerMapComposite(
            layer_map=layer_map_base(1e-6) + [(Linear, Epsilon(epsilon=1e-6))], canonizers=canonizers
        )
    elif name == "epsilon-plus-flat":
        composite = EpsilonPlusFlat(canonizers=canonizers)
    elif name == "epsilon-gamma-box":
        composite = EpsilonGammaBox(canonizers=canonizers, **BOX)
    else:
        raise ValueError(f"no Zennit composite for {name!r} in the benchmark")

    def seed(out):  # relevance one_hot(top-1) * output, as onnxlrp's default target
        onehot = torch.zeros_like(out)
        onehot[torch.arange(out.shape[0]), out.argmax(1)] = 1
        return onehot * out

    attributor = Gradient(model=model, composite=composite)
    attributor.__enter__()  # registering the rules is setup, as onnxlrp's compilation is

    def explain():
        attributor(x, seed)
        sync()

    return explain, extra


def worker(job: dict) -> dict:
    """Run one measurement (see the module docstring); returns its results."""
    threads = job["threads"]
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    cuda = job["device"] == "cuda"
    release_free_memory()
    start_rss = rss()
    call, result = _setup_engine(job)
    if cuda and job["engine"] in ("torch", "zennit"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        gpu_base = torch.cuda.memory_allocated()
    else:
        gpu_base = gpu_process_memory() if cuda else None
    release_free_memory()
    setup_rss = rss()
    exact = reset_peak()
    t0 = time.perf_counter()
    call()  # warm-up: allocations, onnxruntime's first-run set-up, torch's lazy init
    result["warmup_s"] = time.perf_counter() - t0
    result.update(setup_mb=(setup_rss - start_rss) / 2**20, peak_mb=(peak() - setup_rss) / 2**20)
    result["peak_exact"] = exact
    # onnxlrp is also timed against onnxruntime's forward pass in the same process, in alternating
    # rounds of PAIRED_ROUND calls each, so that lrp/fwd holds on a machine whose load changes (the
    # peak above was taken before). Rounds, not single calls: a session's idle threads spin for a
    # while after each run, and the first call after a switch shares the cores with them.
    paired = _setup_engine({**job, "engine": "ort"})[0] if job["engine"] == "lrp" else None
    if paired:
        paired()
    times, paired_times = [], []
    if result["warmup_s"] > job["budget"]:  # one call takes longer than the budget: keep that one
        times.append(result["warmup_s"])
        result["warmup_only"] = True
    engines = [(paired_times, paired), (times, call)] if paired else [(times, call)]
    while len(times) < job["repeat"] and not result.get("warmup_only"):
        for timed, run in engines:
            for _ in range(PAIRED_ROUND if paired else 1):
                t0 = time.perf_counter()
                run()
                timed.append(time.perf_counter() - t0)
        if sum(times) > job["budget"]:
            break
    result.update(times=times, best_s=min(times))
    if paired_times:
        result.update(fwd_paired_times=paired_times, fwd_paired_s=min(paired_times))
    if cuda:
        if job["engine"] in ("torch", "zennit"):
            import torch

            result["gpu_peak_mb"] = (torch.cuda.max_memory_allocated() - gpu_base) / 2**20
        else:
            used = gpu_process_memory()
            if used is not None and gpu_base is not None:
                result["gpu_peak_mb"] = (used - gpu_base) / 2**20  # onnxruntime's arena keeps its peak
    return result


def export_worker(job: dict) -> dict:
    sys.path.insert(0, str(HERE))
    from bench_models import export, make_model

    export(make_model(job["model"]), job["path"])
    return {"path": job["path"]}


# ------------------------------------------------------------------------------------------------
# the driver


def run_job(job: dict, timeout: float) -> dict:
    """Run ``job`` in a fresh Python process; its result, or ``{"error": ...}``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    env = dict(os.environ, OMP_NUM_THREADS=str(job.get("threads", 1)), PYTHONPATH=str(ROOT))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _ms(seconds: float | None, result: dict | None = None) -> str:
    if seconds is None:
        return "-"
    text = f"{seconds * 1e3:.0f}" if seconds >= 0.1 else f"{seconds * 1e3:.1f}"
    return text + ("*" if result and result.get("warmup_only") else "")


def _measures(row: dict, device: str) -> dict[str, float | None]:
    """A row's ratios: onnxlrp over the forward pass (time, peak memory), Zennit over onnxlrp."""
    ort_, lrp, zen = (row.get(e) or {} for e in ("ort", "lrp", "zennit"))
    key = "gpu_peak_mb" if device == "cuda" else "peak_mb"
    t_lrp, t_fwd = lrp.get("best_s"), lrp.get("fwd_paired_s", ort_.get("best_s"))
    m_lrp, m_fwd = lrp.get(key), ort_.get(key)
    return {
        "lrp/fwd": t_lrp / t_fwd if t_lrp and t_fwd else None,
        "zennit/lrp": zen["best_s"] / t_lrp if t_lrp and zen.get("best_s") else None,
        "memory": m_lrp / m_fwd if m_lrp is not None and m_fwd else None,
    }


def _fixed(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict], device: str) -> str:
    mem = "GPU peak MB" if device == "cuda" else "peak MB"
    header = [
        "model",
        "batch",
        "composite",
        "ORT fwd ms",
        "onnxlrp ms",
        "lrp/fwd",
        "torch fwd ms",
        "Zennit ms",
        "zennit/lrp",
        "onnxlrp img/s",
        "Zennit img/s",
        "compile s",
        f"fwd {mem}",
        f"lrp {mem}",
        "lrp/fwd mem",
        f"Zennit {mem}",
        "lrp setup MB",
    ]
    key = "gpu_peak_mb" if device == "cuda" else "peak_mb"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        ort_, lrp, tor, zen = (row.get(e) or {} for e in ENGINES)
        t_ort, t_lrp, t_tor, t_zen = (r.get("best_s") for r in (ort_, lrp, tor, zen))
        m_ort, m_lrp, m_zen = (r.get(key) for r in (ort_, lrp, zen))
        ratios = _measures(row, device)
        lines.append(
            "| "
            + " | ".join(
                [
                    row["model"],
                    str(row["batch"]),
                    row["composite"],
                    _ms(t_ort, ort_),
                    _ms(t_lrp, lrp) if t_lrp is not None else lrp.get("error", "-")[:40],
                    _fixed(ratios["lrp/fwd"], 2),
                    _ms(t_tor, tor),
                    _ms(t_zen, zen) if t_zen is not None else zen.get("error", "-")[:40],
                    _fixed(ratios["zennit/lrp"], 2),
                    "-" if t_lrp is None else f"{row['batch'] / t_lrp:.1f}",
                    "-" if t_zen is None else f"{row['batch'] / t_zen:.1f}",
                    "-" if "compile_s" not in lrp else f"{lrp['compile_s']:.1f}",
                    _fixed(m_ort, 0),
                    _fixed(m_lrp, 0),
                    _fixed(ratios["memory"], 1),
                    _fixed(m_zen, 0),
                    _fixed(lrp.get("setup_mb"), 0),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


# the targets: lrp/fwd bounds per composite, zennit/lrp floors, memory (cuda: at batch 32)
LRP_OVER_FWD = {"epsilon": 2.5, "epsilon-plus-flat": 3.5, "epsilon-gamma-box": 4.0}
ZENNIT_OVER_LRP = {"cpu": {"": 2.0, "resnet18": 4.0, "mobilenet_v2": 4.0}, "cuda": {"": 3.0}}
MEMORY_OVER_FWD = 2.0


def targets(rows: list[dict], device: str) -> str:
    """Each target of the issue against the measured rows: the values and whether all meet it."""
    checks: list[tuple[str, str, float, bool]] = []  # (target, model, value, met)
    for row in rows:
        if device == "cuda" and row["batch"] != 32:
            continue
        m = _measures(row, device)
        bound = LRP_OVER_FWD.get(row["composite"])
        if bound is not None and m["lrp/fwd"] is not None:
            checks.append(
                (f"lrp/fwd <= {bound}, {row['composite']}", row["model"], m["lrp/fwd"], m["lrp/fwd"] <= bound)
            )
        floors = ZENNIT_OVER_LRP[device]
        for floor in sorted({floors[""], floors.get(row["model"], floors[""])}):
            if m["zennit/lrp"] is not None:
                met = m["zennit/lrp"] >= floor
                checks.append((f"zennit/lrp >= {floor}", row["model"], m["zennit/lrp"], met))
        if m["memory"] is not None:
            checks.append(
                (
                    f"memory <= {MEMORY_OVER_FWD}x forward",
                    row["model"],
                    m["memory"],
                    m["memory"] <= MEMORY_OVER_FWD,
                )
            )
    grouped: dict[tuple[str, str], list[tuple[float, bool]]] = {}
    for target, model, value, met in checks:
        grouped.setdefault((target, model), []).append((value, met))
    lines = ["| target | model | values (rows in order) | met |", "|---|---|---|---|"]
    for (target, model), values in grouped.items():
        shown = " / ".join(f"{v:.2f}" for v, _ in values)
        lines.append(f"| {target} | {model} | {shown} | {'yes' if all(m for _, m in values) else 'no'} |")
    return "\n".join(lines)


def profile(args: argparse.Namespace) -> int:
    """Where onnxlrp's time goes: onnxruntime's profiler, per op type and per node."""
    sys.path.insert(0, str(HERE))
    import numpy as np
    import onnxruntime as ort
    from bench_models import make_input

    import onnxlrp
    from onnxlrp.compiler import SEED_INPUT, TARGET_INPUT

    for model in args.models:
        path = model_path(args, model)
        for batch in args.batches:
            x = make_input(batch, seed=2).numpy()
            for composite in args.composites:
                params = BOX if composite == "epsilon-gamma-box" else {}
                compiled = onnxlrp.compile(path, composite, cpu=True, precision=args.precision, **params)
                options = ort.SessionOptions()
                options.intra_op_num_threads = args.threads
                options.enable_profiling = True
                options.profile_file_prefix = str(Path(args.workdir) / f"profile-{model}-{composite}")
                options.log_severity_level = 3
                session = ort.InferenceSession(
                    compiled.model.SerializeToString(), options, providers=["CPUExecutionProvider"]
                )
                feeds = {"input": x, TARGET_INPUT: np.full(batch, -1, np.int64)}
                feeds[SEED_INPUT] = np.zeros((batch, 1000), np.float32)
                for _ in range(args.repeat + 1):
                    session.run(None, feeds)
                events = json.loads(Path(session.end_profiling()).read_text())
                runs = [e for e in events if e.get("name") == "model_run"][1:]  # skip the warm-up
                kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
                per_node = collections.defaultdict(list)
                for run in runs:
                    for e in kernels:
                        if run["ts"] <= e["ts"] <= run["ts"] + run["dur"]:
                            per_node[(e["name"][: -len("_kernel_time")], e["args"]["op_name"])].append(
                                e["dur"]
                            )
                best = {k: min(v) for k, v in per_node.items()}  # per node, the best of the runs
                by_op, count = collections.Counter(), collections.Counter()
                for (_, op), dur in best.items():
                    by_op[op] += dur
                    count[op] += 1
                total = sum(by_op.values())
                best_run = min(r["dur"] for r in runs)
                print(f"\n### {model}, batch {batch}, {composite}, {args.threads} threads")
                print(f"best run {best_run / 1e3:.0f} ms; per-node best kernel times: {total / 1e3:.0f} ms")
                print()
                print("| op type | nodes | ms | share |\n|---|---|---|---|")
                for op, dur in by_op.most_common(12):
                    print(f"| {op} | {count[op]} | {dur / 1e3:.1f} | {100 * dur / total:.1f}% |")
                print("\n| slowest nodes | op | ms |\n|---|---|---|")
                for (name, op), dur in sorted(best.items(), key=lambda kv: -kv[1])[:10]:
                    print(f"| {name} | {op} | {dur / 1e3:.1f} |")
    return 0


def model_path(args: argparse.Namespace, model: str) -> str:
    path = Path(args.workdir) / f"{model}.onnx"
    if not path.exists():
        log(f"exporting {model} -> {path}")
        result = run_job({"engine": "export", "model": model, "path": str(path)}, args.timeout)
        if "error" in result:
            raise SystemExit(f"export of {model} failed: {result['error']}")
    return str(path)


def _csv(choices):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if choices and t not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown: {', '.join(bad)} (choose from {', '.join(choices)})")
        return items

    return parse


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from onnxlrp.graph.precision import PRECISIONS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=_csv((*MODELS, "resnet50")), default=list(MODELS))
    parser.add_argument("--batches", type=lambda t: [int(b) for b in t.split(",")], default=[1, 8, 32])
    parser.add_argument("--composites", type=_csv(None), default=list(COMPOSITES))
    parser.add_argument("--engines", type=_csv(ENGINES), default=list(ENGINES))
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per measurement (best is kept)")
    parser.add_argument(
        "--budget", type=float, default=20.0, help="stop repeating once the timed calls took this long (s)"
    )
    parser.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="onnxlrp's precision (the forward passes and Zennit stay float32)",
    )
    parser.add_argument("--workdir", default=str(ROOT / "out" / "bench"), help="exported models go here")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--timeout", type=float, default=3600.0, help="per measurement, in seconds")
    parser.add_argument("--profile", action="store_true", help="profile onnxlrp with onnxruntime instead")
    parser.add_argument("--report", metavar="JSON", nargs="+", help="print the table of saved --json results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.report:
        rows = [row for path in args.report for row in json.loads(Path(path).read_text())]
        print(table(rows, args.device))
        print("\n" + targets(rows, args.device))
        return 0

    if args.worker:
        job = json.loads(args.worker)
        result = export_worker(job) if job["engine"] == "export" else worker(job)
        print(RESULT + json.dumps(result), flush=True)
        return 0
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    if args.profile:
        return profile(args)

    rows: list[dict] = []
    started = time.perf_counter()
    for model in args.models:
        path = model_path(args, model)
        for batch in args.batches:
            base = {
                "model": model,
                "path": path,
                "batch": batch,
                "threads": args.threads,
                "device": args.device,
                "repeat": args.repeat,
                "budget": args.budget,
                "precision": args.precision,
            }
            forward = {}
            for engine in ("ort", "torch"):
                if engine in args.engines:
                    forward[engine] = run_job({**base, "engine": engine, "composite": None}, args.timeout)
                    log(f"{model} b{batch} {engine}: {json.dumps(forward[engine])[:200]}")
            for composite in args.composites:
                row = {"model": model, "batch": batch, "composite": composite, **forward}
                for engine in ("lrp", "zennit"):
                    if engine in args.engines:
                        row[engine] = run_job(
                            {**base, "engine": engine, "composite": composite}, args.timeout
                        )
                        log(f"{model} b{batch} {composite} {engine}: {json.dumps(row[engine])[:200]}")
                rows.append(row)
                log(table([row], args.device).splitlines()[-1])
                if args.json:  # after every row, so that a stopped run keeps what it measured
                    Path(args.json).write_text(json.dumps(rows, indent=1))
    print(
        f"\n{args.device}, {args.threads} threads, onnxlrp in {args.precision}, best of {args.repeat} "
        f"after one warm-up call ({time.perf_counter() - started:.0f} s in all)\n"
    )
    print(table(rows, args.device))
    print("\n" + targets(rows, args.device))
    if any(r.get("warmup_only") for row in rows for r in row.values() if isinstance(r, dict)):
        print(f"\n*: one call took longer than --budget ({args.budget:.0f} s): the warm-up call itself")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One worker per GPU: which device each worker of a parallel reranker loads its model on.

PyTerrier's ``reranker.parallel(N)`` sends every worker the same pickled reranker. With ``device=None`` each worker
then picks ``"cuda"``, that is the first visible GPU, so N workers on a machine with N GPUs would all load onto GPU 0
and leave the others idle. The helpers here give each worker its own device:

* :func:`worker_device`: the rule. Worker ``i`` gets ``cuda:i``, round-robin over the visible GPUs (or over the
  ``devices`` given), and ``cpu`` when no GPU is visible.
* :func:`on_device`: a copy of a reranker, without its loaded model, that loads its model on a given device.
* :class:`DeviceParallel`: works like ``.parallel(N)`` (queries split over N worker processes, results concatenated),
  but each worker builds its own reranker with its own device.

>>> DeviceParallel(HeadRank("qwen3-4b"))                      # one worker per visible GPU, on this machine
>>> DeviceParallel(HeadRank("qwen3-4b"), 8, backend="ray")    # 8 Ray actors, each asking Ray for one GPU

What is tested: the assignment rule, with the GPU count faked, and both backends on CPU (see tests/test_parallel.py).
Nothing here has been run on a machine with GPUs.
"""
from __future__ import annotations

import pickle
from typing import List, Optional, Sequence, Union

import pandas as pd
import pyterrier as pt
import torch

DeviceLike = Union[int, str, torch.device]
BACKENDS = ("joblib", "ray")


def visible_gpus() -> int:
    """How many CUDA GPUs this process can use: 0 without CUDA.

    ``torch.cuda.device_count()`` already applies ``CUDA_VISIBLE_DEVICES``: with ``CUDA_VISIBLE_DEVICES=2,3`` it is 2,
    and those two GPUs are ``cuda:0`` and ``cuda:1`` inside the process.
    """
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _device_name(device: DeviceLike) -> str:
    """``3`` -> ``"cuda:3"``; anything ``torch.device`` accepts -> its canonical string (``"cuda"``, ``"cpu"``)."""
    if isinstance(device, int) and not isinstance(device, bool):
        return f"cuda:{device}"
    try:
        return str(torch.device(device))
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"worker_device: {device!r} is not a torch device") from err


def worker_device(worker_index: int, devices: Optional[Sequence[DeviceLike]] = None) -> str:
    """The device of worker ``worker_index`` (0, 1, ...): round-robin over ``devices``, else over the visible GPUs.

    Without ``devices``: ``cuda:i`` for ``i = worker_index % visible_gpus()``, and ``"cpu"`` when no GPU is visible
    (indices as the process sees them, after ``CUDA_VISIBLE_DEVICES``). With ``devices`` (GPU indices or device
    strings, e.g. ``[0, 2]`` or ``["cuda:1", "cpu"]``): ``devices[worker_index % len(devices)]``. More workers than
    devices share them in turn. Pure: it only reads the GPU count; whether a device exists is checked where the
    model loads.
    """
    if isinstance(worker_index, bool) or not isinstance(worker_index, int) or worker_index < 0:
        raise ValueError(f"worker_device: worker_index must be an int >= 0, got {worker_index!r}")
    if devices is not None:
        names = [_device_name(d) for d in devices]
        if not names:
            raise ValueError("worker_device: devices is empty; pass None to use the visible GPUs")
        return names[worker_index % len(names)]
    count = visible_gpus()
    return f"cuda:{worker_index % count}" if count else "cpu"


def on_device(reranker, device: DeviceLike):
    """A copy of ``reranker`` (HeadRank, ICR, RankGPT) that loads its model on ``device``; the original is untouched.

    The copy is made by pickling, so it holds no loaded model, and fitted heads, adapter weights and settings come
    along. Only a model given by name (alias, hub id, folder, ``.gguf``) can be loaded elsewhere: a reranker built
    on an already loaded model object is refused, since that model stays on the device it is on.
    """
    if not hasattr(reranker, "device") or not hasattr(reranker, "model"):
        raise TypeError(f"on_device: expects a reranker with model and device settings (HeadRank, ICR, RankGPT), "
                        f"got {type(reranker).__name__}; pass a build(device) function instead")
    if not isinstance(reranker.model, str):
        raise ValueError(f"on_device: {type(reranker).__name__} holds a loaded {type(reranker.model).__name__}, "
                         f"which cannot move to another device; give the model by name, e.g. "
                         f"{type(reranker).__name__}('qwen3-4b'), or pass a build(device) function")
    copy = pickle.loads(pickle.dumps(reranker))
    copy.device = _device_name(device)
    return copy


def _run_split(build, device: Optional[str], frame: pd.DataFrame) -> pd.DataFrame:
    """Runs in a worker: build the transformer for ``device`` and apply it to this worker's share of the queries.

    ``device=None`` means "decide here": inside a Ray actor that was given GPUs, Ray has already narrowed
    ``CUDA_VISIBLE_DEVICES`` to them, so :func:`worker_device` (index 0) names the actor's own first GPU.
    """
    device = worker_device(0) if device is None else device
    transformer = build(device) if callable(build) and not isinstance(build, pt.Transformer) \
        else on_device(build, device)
    return transformer(frame)


class DeviceParallel(pt.Transformer):
    """Rerank with ``n_workers`` worker processes, each with its own reranker on its own device.

    Like ``reranker.parallel(n_workers, backend)``, the input is split by query into ``n_workers`` parts, one per
    worker, and the outputs are concatenated. Unlike it, each worker builds its own reranker for its device.

    Args:
        build: a reranker whose model is given by name (each worker gets :func:`on_device` of it), or a function
            ``build(device) -> Transformer`` for anything else, e.g. ``lambda device:
            HeadRankCache(on_device(reranker, device), path)`` (joblib and Ray send it with cloudpickle, so a lambda
            or a closure travels by value; what it calls must be importable in the workers).
        n_workers: ``None`` for one per device: ``len(devices)``, else the visible GPUs here (at least 1); with
            ``backend="ray"`` the GPUs of the Ray cluster (at least 1).
        devices: with ``backend="joblib"``, the devices to share out (see :func:`worker_device`); ``None`` for the
            visible GPUs. Not used with Ray, which assigns the GPUs itself.
        backend: ``"joblib"`` for processes on this machine; ``"ray"`` for actors of the running Ray cluster
            (``ray.init()`` first), which may be on several machines.
        gpus_per_worker: Ray only: GPUs each actor asks Ray for; ``None`` for 1 when the cluster has GPUs, else 0
            (then the workers run on CPU). Fractions (0.5) put several actors on one GPU.

    Each call starts fresh workers, which load the model again: give it all queries in one call. The worker
    processes read nothing from this one, so the model, and any file the pipeline reads, must be there for them.
    """

    def __init__(self, build, n_workers: Optional[int] = None, devices: Optional[Sequence[DeviceLike]] = None,
                 backend: str = "joblib", gpus_per_worker: Optional[float] = None):
        if backend not in BACKENDS:
            raise ValueError(f"DeviceParallel: backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "ray" and devices is not None:
            raise ValueError("DeviceParallel: with backend='ray' Ray assigns the GPUs; use gpus_per_worker, "
                             "not devices")
        if gpus_per_worker is not None and (backend != "ray" or gpus_per_worker < 0):
            raise ValueError("DeviceParallel: gpus_per_worker is for backend='ray' and must be >= 0")
        if isinstance(build, pt.Transformer) or not callable(build):
            on_device(build, "cpu")  # refuse now what every worker would refuse later
        self.build = build
        self.devices = None if devices is None else [_device_name(d) for d in devices]
        self.backend = backend
        self.gpus_per_worker = gpus_per_worker
        if n_workers is not None and int(n_workers) < 1:
            raise ValueError(f"DeviceParallel: n_workers must be >= 1, got {n_workers!r}")
        self.n_workers = None if n_workers is None else int(n_workers)

    def plan(self) -> List[Optional[str]]:
        """The device of each worker; ``None`` where a Ray actor decides on its own (it was given GPUs)."""
        if self.backend == "joblib":
            count = self.n_workers or (len(self.devices) if self.devices else max(1, visible_gpus()))
            return [worker_device(i, self.devices) for i in range(count)]
        gpus, cluster = self._ray_gpus_per_worker(), _ray_cluster_gpus()
        count = self.n_workers or (max(1, int(cluster // gpus)) if gpus else 1)
        if count * gpus > cluster:  # Ray would wait for ever for GPUs that do not exist
            raise ValueError(f"DeviceParallel: {count} workers x {gpus:g} GPUs is more than the {cluster:g} GPUs "
                             f"of the Ray cluster; use fewer workers or a smaller gpus_per_worker")
        return [None if gpus else "cpu"] * count

    def _ray_gpus_per_worker(self) -> float:
        if self.gpus_per_worker is not None:
            return float(self.gpus_per_worker)
        return 1.0 if _ray_cluster_gpus() > 0 else 0.0

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """Split ``inp`` by query over the workers of :meth:`plan`, run them, and concatenate their outputs."""
        if len(inp) == 0:
            return _run_split(self.build, "cpu", inp)  # nothing to score: no workers, no model
        plan = self.plan()
        jobs = list(zip(plan, pt.model.split_df(inp, len(plan))))  # fewer queries than workers: fewer jobs
        if self.backend == "joblib":
            from joblib import Parallel, delayed
            outputs = Parallel(n_jobs=len(jobs))(delayed(_run_split)(self.build, d, s) for d, s in jobs)
        else:
            from ray.util.multiprocessing import Pool
            with Pool(len(jobs), ray_remote_args={"num_gpus": self._ray_gpus_per_worker()}) as pool:
                outputs = pool.starmap(_run_split, [(self.build, d, s) for d, s in jobs], chunksize=1)
        return pd.concat(outputs, ignore_index=True)

    def __repr__(self) -> str:
        return f"DeviceParallel({self.build!r}, n_workers={self.n_workers}, backend={self.backend!r})"


def _ray_cluster_gpus() -> float:
    """GPUs in the running Ray cluster (``ray.init()`` must have been called, as for ``.parallel(backend="ray")``)."""
    import ray
    if not ray.is_initialized():
        raise RuntimeError("DeviceParallel: backend='ray' needs a running Ray cluster; call ray.init() first "
                           "(ray.init(address='auto') to join a cluster started with `ray start`)")
    return float(ray.cluster_resources().get("GPU", 0))

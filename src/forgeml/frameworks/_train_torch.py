"""forgeml.train for torch: built-in models (MLP, CNN) and the epoch loop with checkpoints.

Loaded by ``forgeml.train`` when a model is a ``torch.nn.Module``. The loop
reads numpy arrays (``forgeml.train`` gathers them from the dataset once),
shuffles with a generator seeded per epoch, and checkpoints with the torch
state adapter (safetensors + JSON).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from forgeml._core._errors import TrainError, did_you_mean
from forgeml._core._files import atomic_write_text
from forgeml.objects import Object

#: forgeml.train's loop records a training loss for torch models
REPORTS_LOSS = True
#: portable loss names -> torch.nn classes
LOSSES = {
    "cross_entropy": "CrossEntropyLoss",
    "nll": "NLLLoss",
    "mse": "MSELoss",
    "mae": "L1Loss",
    "l1": "L1Loss",
    "huber": "HuberLoss",
    "smooth_l1": "SmoothL1Loss",
    "bce": "BCEWithLogitsLoss",
}
_CLASS_LOSSES = ("CrossEntropyLoss", "NLLLoss", "MultiMarginLoss")
_ACTIVATIONS = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "tanh": torch.nn.Tanh}
_PREDICT_BATCH = 1024


def _sizes(value: int | Sequence[int], what: str) -> list[int]:
    sizes = [value] if isinstance(value, int) else list(value)
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise TrainError(f"{what} must be a positive integer or a list of them. Got {value!r}.")
    return sizes


def _activation(name: str) -> Any:
    if name not in _ACTIVATIONS:
        raise TrainError(
            f"Unknown activation '{name}'. Known: {', '.join(_ACTIVATIONS)}."
            + did_you_mean(name, _ACTIVATIONS)
        )
    return _ACTIVATIONS[name]


def _dropout(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise TrainError(f"dropout must be a number in [0, 1). Got {value!r}.")
    return float(value)


class MLP(Object, torch.nn.Module):  # type: ignore[misc]
    """A multilayer perceptron: inputs flattened, ``hidden`` layers, ``classes`` outputs.

    ``MLP(inputs=64, classes=10, hidden=[64])`` fits 8x8 digits (any input shape
    whose size is ``inputs``); ``classes=1`` gives one value (regression).
    """

    def __init__(
        self,
        inputs: int = 64,
        classes: int = 10,
        hidden: int | Sequence[int] = (64,),
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        layers: list[Any] = [torch.nn.Flatten()]
        width = _sizes(inputs, "MLP's inputs")[0]
        act, rate = _activation(activation), _dropout(dropout)
        for size in _sizes(hidden, "MLP's hidden") if hidden else []:
            layers += [torch.nn.Linear(width, size), act()]
            if rate:
                layers.append(torch.nn.Dropout(rate))
            width = size
        layers.append(torch.nn.Linear(width, _sizes(classes, "MLP's classes")[0]))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(Object, torch.nn.Module):  # type: ignore[misc]
    """A small convolutional network for ``size``x``size`` images (8x8 digits by default).

    Two 3x3 convolutions (``channels``), a 2x2 max-pool, a dense layer of
    ``hidden`` units and ``classes`` outputs. Takes ``(N, H, W)`` or ``(N, C, H, W)``.
    """

    def __init__(
        self,
        classes: int = 10,
        channels: Sequence[int] = (16, 32),
        hidden: int = 64,
        dropout: float = 0.0,
        in_channels: int = 1,
        size: int = 8,
    ) -> None:
        super().__init__()
        first, second = _sizes(channels, "CNN's channels")[:2] if len(channels) >= 2 else (0, 0)
        if not first:
            raise TrainError(f"CNN's channels must list two sizes. Got {channels!r}.")
        side = _sizes(size, "CNN's size")[0] // 2
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(_sizes(in_channels, "CNN's in_channels")[0], first, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(first, second, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Flatten(),
        )
        self.head = torch.nn.Sequential(
            torch.nn.Linear(second * side * side, _sizes(hidden, "CNN's hidden")[0]),
            torch.nn.ReLU(),
            torch.nn.Dropout(_dropout(dropout)),
            torch.nn.Linear(hidden, _sizes(classes, "CNN's classes")[0]),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x.unsqueeze(1)
        return self.head(self.features(x))


# ----------------------------------------------------------------------------- components


def seed(value: int) -> None:
    from forgeml.frameworks import get_adapter

    get_adapter("torch").seed(value)  # type: ignore[attr-defined]


def default_procedure() -> Any:
    from forgeml.train import EpochLoop

    return EpochLoop()


def scores(net: Any) -> bool:
    """Torch modules always give outputs that metrics can score."""
    return True


def build_optimizer(component: Any, net: Any) -> Any:
    name, params = (
        ("Adam", {"lr": 1e-3}) if component is None else (component.name, component.params)
    )
    known = sorted(
        n
        for n, c in vars(torch.optim).items()
        if isinstance(c, type)
        and issubclass(c, torch.optim.Optimizer)
        and c is not torch.optim.Optimizer
    )
    if name not in known:
        raise TrainError(
            f"Unknown torch optimizer '{name}'. Known: {', '.join(known)}."
            + did_you_mean(name, known)
        )
    try:
        return getattr(torch.optim, name)(net.parameters(), **params)
    except (TypeError, ValueError) as exc:
        raise TrainError(f"Cannot build torch.optim.{name}({_args(params)}): {exc}") from None


def build_loss(component: Any, y: np.ndarray) -> tuple[Any, bool]:
    """The loss module and whether it takes class indices."""
    if component is None:
        name, params = ("cross_entropy" if y.dtype.kind in "iub" else "mse"), {}
    else:
        name, params = component.name, component.params
    cls_name = LOSSES.get(name, name)
    cls = getattr(torch.nn, cls_name, None)
    if not (
        isinstance(cls, type) and issubclass(cls, torch.nn.Module) and cls_name.endswith("Loss")
    ):
        known = [*LOSSES, *sorted(n for n in vars(torch.nn) if n.endswith("Loss"))]
        raise TrainError(
            f"Unknown loss '{name}'. Portable names: {', '.join(LOSSES)}; or a torch.nn loss class "
            f"such as CrossEntropyLoss." + did_you_mean(name, known)
        )
    try:
        return cls(**params), cls_name in _CLASS_LOSSES
    except (TypeError, ValueError) as exc:
        raise TrainError(f"Cannot build torch.nn.{cls_name}({_args(params)}): {exc}") from None


def _args(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def _tensors(x: np.ndarray, y: np.ndarray | None, classes: bool) -> tuple[Any, Any]:
    xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    if y is None:
        return xt, None
    yt = torch.as_tensor(np.ascontiguousarray(y, dtype=np.int64 if classes else np.float32))
    return xt, yt


def _loss_value(loss_fn: Any, out: Any, target: Any, classes: bool) -> Any:
    if not classes and out.shape != target.shape and out.numel() == target.numel():
        target = target.view_as(out)
    return loss_fn(out, target)


#: models smaller than this many parameters run on one thread with threads="auto"
SMALL_MODEL = 1_000_000


@contextlib.contextmanager
def threads_for(net: Any, setting: int | str | None = "auto") -> Iterator[None]:
    """torch's intra-op threads for ``net`` inside the block (see ``EpochLoop(threads=)``)."""
    if setting == "auto":
        small = sum(p.numel() for p in net.parameters()) < SMALL_MODEL
        setting = 1 if small else None
    if setting is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(setting))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _device_of(net: Any) -> Any:
    first = next(iter(net.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def resolve_device(name: str) -> Any:
    """``"auto"``: the first GPU when torch sees one, else the CPU; other names as given."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise TrainError(f"EpochLoop's device {name!r} is not a torch device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(
            f"EpochLoop(device={name!r}) needs a CUDA GPU, and torch sees none here. Use "
            f"device='cpu', or 'auto' (a GPU when there is one)."
        )
    return device


def predict(net: Any, x: np.ndarray) -> np.ndarray:
    """The module's outputs for ``x`` in eval mode, batch by batch, on the module's device."""
    xt, _ = _tensors(x, None, False)
    device = _device_of(net)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), threads_for(net):
            parts = [
                net(xt[i : i + _PREDICT_BATCH].to(device)).cpu()
                for i in range(0, len(xt), _PREDICT_BATCH)
            ]
    finally:
        net.train(was_training)
    return torch.cat(parts).numpy() if parts else np.zeros((0,), np.float32)


def transform(net: Any, x: np.ndarray) -> np.ndarray:
    return predict(net, x)


# ----------------------------------------------------------------------------- the loop


def fit(job: Any) -> None:
    """Run the procedure (an :class:`~forgeml.train.EpochLoop`) on ``job``."""
    from forgeml.train import EpochLoop

    procedure = job.procedure
    if not isinstance(procedure, EpochLoop):
        raise TrainError(
            f"torch modules train with the EpochLoop procedure; got {type(procedure).__name__}. "
            f"Use procedure=ObjectDef(EpochLoop, epochs=..., batch_size=...)."
        )
    with threads_for(job.net, procedure.threads):
        _loop(job)


def _loop(job: Any) -> None:
    procedure, progress, net = job.procedure, job.progress, job.net
    device = resolve_device(procedure.device)
    net.to(device)
    optimizer = build_optimizer(job.optimizer, net)
    loss_fn, classes = build_loss(job.loss, job.y)
    x, y = _tensors(job.x, job.y, classes)
    val = _tensors(job.val[0], job.val[1], classes) if job.val is not None else None
    base = job.seed if job.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
    checkpoints = procedure.checkpoint_dir
    start = 1
    if procedure.resume:
        state = _load_latest(checkpoints, net, optimizer)
        if state is not None:
            progress.restore(state["progress"])
            base, start = int(state["seed"]), int(state["epoch"]) + 1
    best_state = None
    batch = procedure.batch_size or 32
    for epoch in range(start, procedure.epochs + 1):
        net.train()
        order = (
            torch.randperm(len(x), generator=torch.Generator().manual_seed(base + epoch))
            if procedure.shuffle
            else torch.arange(len(x))
        )
        total: Any = 0.0
        for i in range(0, len(x), batch):
            index = order[i : i + batch]
            optimizer.zero_grad()
            xb, yb = x[index].to(device), y[index].to(device)
            loss = _loss_value(loss_fn, net(xb), yb, classes)
            loss.backward()
            optimizer.step()
            total = total + loss.detach() * len(index)  # summed on the device: no sync per step
        metrics = {"loss": float(total) / max(len(x), 1)}
        if val is not None:
            outputs = torch.as_tensor(predict(net, job.val[0]))
            with torch.no_grad():
                metrics["val_loss"] = float(_loss_value(loss_fn, outputs, val[1], classes))
            if progress.metrics:
                metrics.update(progress.score("val_", job.val[1], outputs.numpy()))
        progress.epoch_end(epoch, metrics)
        if progress.improved and procedure.restore_best:
            best_state = copy.deepcopy(net.state_dict())
        if checkpoints is not None:
            state = {"epoch": epoch, "seed": base, "progress": progress.state()}
            if procedure.save_best and progress.improved:
                _save_checkpoint(Path(checkpoints) / "best", net, optimizer, state)
            every = procedure.checkpoint_every
            last = epoch == procedure.epochs or progress.should_stop
            if every and (epoch % every == 0 or last):
                _save_checkpoint(Path(checkpoints) / f"epoch-{epoch:04d}", net, optimizer, state)
        if progress.should_stop:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    elif procedure.restore_best and progress.best_epoch is not None and progress.best_epoch < start:
        _restore_best_checkpoint(checkpoints, net, progress.best_epoch)  # best before resuming


# ----------------------------------------------------------------------------- checkpoints


def _save_checkpoint(target: Path, net: Any, optimizer: Any, state: dict[str, Any]) -> None:
    """Write a checkpoint folder atomically: a temp folder renamed into place."""
    from forgeml.frameworks import get_adapter
    from forgeml.io import save

    adapter: Any = get_adapter("torch")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        info = {
            "model": adapter.save_state(net, tmp, "model"),
            "optimizer": adapter.save_state(optimizer, tmp, "optimizer"),
        }
        save({"rng": torch.get_rng_state()}, tmp / "rng.safetensors", checksum=False)
        atomic_write_text(tmp / "state.json", json.dumps({**state, "files": info}, indent=1))
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _restore_best_checkpoint(directory: Any, net: Any, epoch: int) -> None:
    """Load the weights of ``best/`` (saved at ``epoch``) into ``net``."""
    from forgeml.frameworks import get_adapter

    best = Path(directory) / "best"
    try:
        state = json.loads((best / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = {}
    if state.get("epoch") != epoch:
        raise TrainError(
            f"restore_best=True: the best epoch ({epoch}) was before resuming, but {best} does "
            f"not hold it (save_best=False?). Resume with save_best=True to restore it."
        )
    adapter: Any = get_adapter("torch")
    adapter.load_state(net, best, state["files"]["model"])


def _latest_checkpoint(root: Path) -> Path | None:
    """The complete ``epoch-N`` folder with the highest N, by number (epoch-10000 comes
    after epoch-9999, which a sort by name gets wrong), or None."""
    done: list[tuple[int, Path]] = []
    for path in root.glob("epoch-*"):
        suffix = path.name.removeprefix("epoch-")
        if suffix.isdigit() and (path / "state.json").is_file():
            done.append((int(suffix), path))
    return max(done)[1] if done else None


def _load_latest(directory: Any, net: Any, optimizer: Any) -> dict[str, Any] | None:
    """Load the latest complete ``epoch-NNNN`` checkpoint into ``net`` and ``optimizer``."""
    from forgeml.frameworks import get_adapter
    from forgeml.io import load

    latest = _latest_checkpoint(Path(directory))
    if latest is None:
        return None
    adapter: Any = get_adapter("torch")
    try:
        state: dict[str, Any] = json.loads((latest / "state.json").read_text(encoding="utf-8"))
        adapter.load_state(net, latest, state["files"]["model"])
        adapter.load_state(optimizer, latest, state["files"]["optimizer"])
        rng = load(latest / "rng.safetensors", framework="torch")["rng"]
    except (OSError, ValueError, KeyError) as exc:
        raise TrainError(
            f"Cannot resume from the checkpoint {latest}: {exc}. Remove it to resume from the "
            f"one before, or train without resume=True."
        ) from None
    torch.set_rng_state(rng)
    return state

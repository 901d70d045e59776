"""Built-in components: optimizer, loss, procedures and a scikit-learn-API estimator.

They are :class:`~forgeml.objects.Object` s that only hold settings, so any of
their arguments is a search-space dimension for ``forgeml.tune`` and every
trained model rebuilds from its definition. The framework code that acts on
them lives in ``forgeml/frameworks/_train_<framework>.py``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from forgeml._core._errors import ObjectError, TrainError
from forgeml.objects import Object, import_class


class Optimizer(Object):
    """An optimizer by name plus its parameters, built for the model when training starts.

    ``name`` is a class of ``torch.optim`` (``"Adam"``, ``"SGD"``, ``"AdamW"``...)
    or of ``keras.optimizers``; ``lr`` is passed to Keras as ``learning_rate``.

    >>> Optimizer("SGD", lr=0.1, momentum=0.9).params
    {'lr': 0.1, 'momentum': 0.9}
    """

    def __init__(self, name: str = "Adam", **params: Any) -> None:
        if not isinstance(name, str) or not name:
            raise TrainError(
                f"Optimizer takes the name of an optimizer class, e.g. 'Adam' or 'SGD'. "
                f"Got {name!r}."
            )
        self.name = name
        self.params = dict(params)


class Loss(Object):
    """A loss by name plus its parameters.

    Portable names: ``"cross_entropy"`` (class indices and logits), ``"mse"``,
    ``"mae"``/``"l1"``, ``"huber"``, ``"bce"`` (binary, logits); or a class
    of ``torch.nn`` (``"CrossEntropyLoss"``) or ``keras.losses``.
    """

    def __init__(self, name: str = "cross_entropy", **params: Any) -> None:
        if not isinstance(name, str) or not name:
            raise TrainError(
                f"Loss takes a loss name, e.g. 'cross_entropy' or 'mse'. Got {name!r}."
            )
        self.name = name
        self.params = dict(params)


class _Procedure(Object):
    """Settings every procedure shares: metrics, monitoring and early stopping."""

    def _common(
        self,
        *,
        epochs: int,
        batch_size: int | None,
        metrics: Iterable[str] | None,
        monitor: str | None,
        mode: str,
        patience: int | None,
        min_delta: float,
        restore_best: bool,
        shuffle: bool,
    ) -> None:
        what = type(self).__name__
        self.epochs = _positive_int(epochs, what, "epochs")
        self.batch_size = (
            None if batch_size is None else _positive_int(batch_size, what, "batch_size")
        )
        if metrics is not None:
            from forgeml.metrics._metric_set import _check_names

            metrics = _check_names(metrics)
        self.metrics: tuple[str, ...] | None = None if metrics is None else tuple(metrics)
        if monitor is not None and not isinstance(monitor, str):
            raise TrainError(f"{what}'s monitor must be a metric name. Got {monitor!r}.")
        self.monitor = monitor
        if mode not in ("auto", "min", "max"):
            raise TrainError(f"{what}'s mode must be 'auto', 'min' or 'max'. Got {mode!r}.")
        self.mode = mode
        self.patience = None if patience is None else _positive_int(patience, what, "patience")
        if isinstance(min_delta, bool) or not isinstance(min_delta, int | float) or min_delta < 0:
            raise TrainError(f"{what}'s min_delta must be a number >= 0. Got {min_delta!r}.")
        if not math.isfinite(min_delta):
            raise TrainError(f"{what}'s min_delta must be finite. Got {min_delta!r}.")
        self.min_delta = float(min_delta)
        self.restore_best = bool(restore_best)
        self.shuffle = bool(shuffle)


class EpochLoop(_Procedure):
    """The epoch loop for torch modules, with early stopping and checkpoints.

    Every epoch trains on shuffled mini-batches of ``batch_size``, then scores
    the validation data (``val_loss`` and ``val_<metric>`` for each of
    ``metrics``; default ``accuracy`` for class targets, ``mae`` for values).
    ``monitor`` (default ``val_loss``, or ``loss`` without validation data)
    decides the best epoch; ``mode`` says whether lower or higher is better
    (``auto``: lower for losses and errors). With ``patience``, training stops
    after that many epochs without an improvement larger than ``min_delta``.
    ``restore_best`` puts the best epoch's weights back at the end.

    ``checkpoint_dir`` saves the weights, the optimizer state and the history
    (safetensors + JSON, never pickle) to ``epoch-NNNN/`` every
    ``checkpoint_every`` epochs and to ``best/`` whenever the monitored metric
    improves (``save_best``). ``resume=True`` continues from the latest
    ``epoch-NNNN/`` there: the same result as a run that was never interrupted.

    ``threads`` is torch's intra-op thread count while training: ``"auto"``
    uses one thread for models under a million parameters (as fast, much faster
    on shared cores, and the same numbers on any machine) and leaves larger ones
    alone; ``None`` leaves torch's setting; a number sets it. ``device`` is where
    the model trains (``"auto"``: the first GPU when there is one, else the CPU).
    """

    def __init__(
        self,
        epochs: int = 10,
        batch_size: int = 32,
        *,
        metrics: Iterable[str] | None = None,
        monitor: str | None = None,
        mode: str = "auto",
        patience: int | None = None,
        min_delta: float = 0.0,
        restore_best: bool = False,
        shuffle: bool = True,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 1,
        save_best: bool = True,
        resume: bool = False,
        threads: int | str | None = "auto",
        device: str = "auto",
    ) -> None:
        self._common(
            epochs=epochs,
            batch_size=batch_size,
            metrics=metrics,
            monitor=monitor,
            mode=mode,
            patience=patience,
            min_delta=min_delta,
            restore_best=restore_best,
            shuffle=shuffle,
        )
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_every = _non_negative_int(checkpoint_every, "EpochLoop", "checkpoint_every")
        self.save_best = bool(save_best)
        self.resume = bool(resume)
        if threads not in ("auto", None):
            threads = _positive_int(threads, "EpochLoop", "threads")
        self.threads = threads
        if not isinstance(device, str) or not device:
            raise TrainError(
                f"EpochLoop's device must be 'auto', 'cpu', 'cuda' or 'cuda:N'. Got {device!r}."
            )
        self.device = device
        if self.resume and self.checkpoint_dir is None:
            raise TrainError(
                "EpochLoop(resume=True) needs checkpoint_dir=: the folder to resume from."
            )


class Fit(_Procedure):
    """``fit`` for scikit-learn, XGBoost and Keras models.

    scikit-learn and XGBoost: one ``estimator.fit(x, y)`` (``epochs=1``), or, for
    estimators with ``partial_fit`` (``SGDClassifier``, ``MLPClassifier``...),
    ``epochs`` passes of ``partial_fit`` over mini-batches of ``batch_size``
    (default: all the data), scored after each. Keras: ``model.fit`` with
    ``epochs`` and ``batch_size`` (default 32). Metrics, monitoring, early
    stopping (``patience``) and ``restore_best`` work as in :class:`EpochLoop`.
    """

    def __init__(
        self,
        epochs: int = 1,
        batch_size: int | None = None,
        *,
        metrics: Iterable[str] | None = None,
        monitor: str | None = None,
        mode: str = "auto",
        patience: int | None = None,
        min_delta: float = 0.0,
        restore_best: bool = False,
        shuffle: bool = True,
    ) -> None:
        self._common(
            epochs=epochs,
            batch_size=batch_size,
            metrics=metrics,
            monitor=monitor,
            mode=mode,
            patience=patience,
            min_delta=min_delta,
            restore_best=restore_best,
            shuffle=shuffle,
        )


class Estimator(Object):
    """A scikit-learn-API estimator by class path plus its parameters, held in ``.model``.

    >>> est = Estimator("sklearn.decomposition:PCA", n_components=8)
    >>> est.model
    PCA(n_components=8)

    Works for scikit-learn estimators and pipelines, XGBoost's
    ``XGBClassifier``/``XGBRegressor`` and anything with ``fit`` and ``predict``
    or ``transform``. The class is imported when the Estimator is built.
    """

    def __init__(self, cls: str, **params: Any) -> None:
        if not isinstance(cls, str):
            raise TrainError(
                f"Estimator takes the class path of an estimator, 'package.module:Class' (e.g. "
                f"'sklearn.linear_model:LogisticRegression'). Got {cls!r}."
            )
        try:
            klass = import_class(cls)
        except (ObjectError, ImportError, AttributeError) as exc:
            raise TrainError(f"Estimator cannot import {cls!r}: {exc}") from None
        if not callable(getattr(klass, "fit", None)):
            raise TrainError(
                f"{cls} has no fit(); Estimator takes scikit-learn-API estimators (fit, and "
                f"predict or transform)."
            )
        try:
            self.model = klass(**params)
        except TypeError as exc:
            raise TrainError(f"Cannot build {cls}({_describe(params)}): {exc}") from None


def _describe(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def _positive_int(value: object, what: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TrainError(f"{what}'s {name} must be a positive integer. Got {value!r}.")
    return value


def _non_negative_int(value: object, what: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TrainError(f"{what}'s {name} must be an integer >= 0. Got {value!r}.")
    return value

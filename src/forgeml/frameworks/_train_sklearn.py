"""forgeml.train for scikit-learn-API estimators (scikit-learn, XGBoost): the Fit procedure.

Inputs are flattened to ``(samples, features)``; ``fit`` runs once, or, for
estimators with ``partial_fit``, once per epoch over mini-batches. The seed
goes to every ``random_state`` the estimator leaves unset.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import sklearn.base

from forgeml._core._errors import TrainError

#: scikit-learn estimators report no training loss to forgeml.train
REPORTS_LOSS = False


def seed(value: int) -> None:
    np.random.seed(value % 2**32)


def default_procedure() -> Any:
    from forgeml.train import Fit

    return Fit()


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1) if x.ndim != 2 else x


def scores(net: Any) -> bool:
    """True for models with ``predict`` (a transformer such as PCA has nothing to score)."""
    return callable(getattr(net, "predict", None))


def _class_scores(net: Any, x: np.ndarray) -> np.ndarray | None:
    classes = getattr(net, "classes_", None)
    if classes is None or not callable(getattr(net, "predict_proba", None)):
        return None
    classes = np.asarray(classes)
    if classes.dtype.kind not in "iu" or not np.array_equal(classes, np.arange(len(classes))):
        return None  # columns are not class indices: give predict()'s labels instead
    try:
        return np.asarray(net.predict_proba(x))
    except AttributeError:  # e.g. SGDClassifier(loss="hinge") has no probabilities
        return None


def predict(net: Any, x: np.ndarray) -> np.ndarray:
    """Class probabilities for classifiers whose classes are 0..K-1, else ``predict``."""
    x = _flat(x)
    if not scores(net):
        raise TrainError(
            f"{type(net).__name__} has no predict(): it is a transformer. Use it as a stage of "
            f"a Pipe before a model, or call transform()."
        )
    probabilities = _class_scores(net, x)
    return probabilities if probabilities is not None else np.asarray(net.predict(x))


def transform(net: Any, x: np.ndarray) -> np.ndarray:
    """The outputs (:func:`predict`) of models, ``transform`` of transformers (PCA, scalers)."""
    if scores(net):
        return predict(net, x)
    if not callable(getattr(net, "transform", None)):
        raise TrainError(f"{type(net).__name__} has neither predict() nor transform().")
    return np.asarray(net.transform(_flat(x)))


def _seed_random_states(net: Any, value: int) -> None:
    if not callable(getattr(net, "get_params", None)):
        return
    unset = {
        key: value
        for key, current in net.get_params(deep=True).items()
        if (key == "random_state" or key.endswith("__random_state")) and current is None
    }
    if unset:
        net.set_params(**unset)


def fit(job: Any) -> None:
    """Run :class:`~forgeml.train.Fit` on a scikit-learn-API estimator."""
    from forgeml.train import Fit

    procedure, progress, net = job.procedure, job.progress, job.net
    name = type(net).__name__
    if not isinstance(procedure, Fit):
        raise TrainError(
            f"{name} trains with the Fit procedure; got {type(procedure).__name__}. Use "
            f"procedure=ObjectDef(Fit, epochs=...)."
        )
    for role, component in (("optimizer", job.optimizer), ("loss", job.loss)):
        if component is not None:
            raise TrainError(
                f"A {role} component does not apply to {name}: scikit-learn-API estimators "
                f"choose their own. Set it as an estimator parameter instead (e.g. "
                f"Estimator(..., loss='log_loss'))."
            )
    if job.seed is not None:
        _seed_random_states(net, job.seed)
    x, y = _flat(job.x), job.y
    val = (_flat(job.val[0]), job.val[1]) if job.val is not None else None
    epochs = procedure.epochs
    incremental = callable(getattr(net, "partial_fit", None))
    if epochs > 1 and not incremental:
        raise TrainError(
            f"Fit(epochs={epochs}) needs an estimator with partial_fit; {name} has only fit. "
            f"Use Fit(epochs=1), or an estimator that learns incrementally (SGDClassifier, "
            f"MLPClassifier...)."
        )
    rng = np.random.default_rng(job.seed)
    classes = np.unique(y) if sklearn.base.is_classifier(net) else None
    best = None
    for epoch in range(1, epochs + 1):
        if epochs == 1:
            net.fit(x, y)
        else:
            order = rng.permutation(len(x)) if procedure.shuffle else np.arange(len(x))
            size = procedure.batch_size or len(x)
            for i in range(0, len(x), size):
                index = order[i : i + size]
                if classes is not None:
                    net.partial_fit(x[index], y[index], classes=classes)
                else:
                    net.partial_fit(x[index], y[index])
        metrics: dict[str, float] = {}
        if progress.metrics and scores(net):
            metrics.update(progress.score("", y, predict(net, x)))
            if val is not None:
                metrics.update(progress.score("val_", val[1], predict(net, val[0])))
        progress.epoch_end(epoch, metrics)
        if progress.improved and procedure.restore_best and epochs > 1:
            best = copy.deepcopy(net)
        if progress.should_stop:
            break
    if best is not None:
        net.__dict__.update(best.__dict__)

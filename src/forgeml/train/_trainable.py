"""``Trainable``: a model plus optimizer, loss, procedure and callbacks, all definitions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from forgeml._core._errors import TrainError
from forgeml.objects import Archive, Object, ObjectDef
from forgeml.train._callbacks import Callback
from forgeml.train._loop import (
    FitJob,
    Progress,
    arrays,
    backend,
    check_callbacks,
    default_metrics,
    framework_model,
    seed_everything,
)
from forgeml.train._result import TrainResult

_RESULT = "result.json"


def _component(value: Any, role: str, required: bool = False) -> Any:
    """An ObjectDef built, an Object as it is, None as None."""
    if value is None:
        if required:
            raise TrainError(f"Trainable needs a {role}: an ObjectDef or an Object.")
        return None
    if isinstance(value, ObjectDef):
        return value.build()
    if isinstance(value, Object):
        return value
    raise TrainError(
        f"The {role} of a Trainable must be an ObjectDef (or an Object, which remembers its "
        f"definition). Got {value!r} ({type(value).__name__}). Wrap it, e.g. "
        f"ObjectDef(Optimizer, 'Adam', lr=1e-3)."
    )


class Trainable(Object):
    """A model and how to train it, every part a definition ``forgeml.tune`` can search.

    ``model`` builds the framework model: a torch module that is an Object
    (:class:`~forgeml.frameworks._train_torch.MLP`, ``CNN`` or your own), an
    :class:`Estimator` (scikit-learn, XGBoost) or a Keras model holder
    (``KerasMLP``). ``optimizer`` and ``loss`` (:class:`Optimizer`,
    :class:`Loss`) apply to torch and Keras; ``procedure`` is :class:`EpochLoop`
    (torch, the default there) or :class:`Fit` (the default for the others);
    ``callbacks`` are Objects with ``on_epoch_end(epoch, metrics)``. Components
    may be ObjectDefs (built now) or Objects (kept, recorded by definition).

    :meth:`fit` trains and returns a :class:`TrainResult`; :meth:`evaluate`
    scores with :mod:`forgeml.metrics`; ``definition()`` rebuilds the untrained
    Trainable; ``save_object``/``load_object`` keep the trained weights.
    """

    def __init__(
        self,
        *,
        model: Any,
        optimizer: Any = None,
        loss: Any = None,
        procedure: Any = None,
        callbacks: Sequence[Any] = (),
    ) -> None:
        self.model = _component(model, "model", required=True)
        self.optimizer = _component(optimizer, "optimizer")
        self.loss = _component(loss, "loss")
        self.procedure = _component(procedure, "procedure")
        if isinstance(callbacks, Object | ObjectDef | Callback) or not isinstance(
            callbacks, Iterable
        ):
            raise TrainError(
                f"Trainable's callbacks must be a list or tuple of callbacks. Got {callbacks!r}."
            )
        built = [c.build() if isinstance(c, ObjectDef) else c for c in callbacks]
        self.callbacks = check_callbacks(built, "Trainable")
        self.result: TrainResult | None = None
        framework_model(self.model)  # fails now, not at fit, for a model forgeml cannot train

    # -- the definition ----------------------------------------------------------------------

    def definition(self) -> ObjectDef:
        """The definition that rebuilds this Trainable untrained.

        Callbacks that are not Objects (a :class:`ReportCallback` holding a
        function) are left out: they belong to one run, not to the model.
        """
        kwargs = dict(self.dry_kwargs)
        if "callbacks" in kwargs:
            kept = tuple(c for c in kwargs["callbacks"] if isinstance(c, Object | ObjectDef))
            if kept:
                kwargs["callbacks"] = kept
            else:
                del kwargs["callbacks"]
        return ObjectDef(type(self), *self.dry_args, **kwargs)

    def _model_definition(self) -> ObjectDef:
        recorded = self.dry_kwargs["model"]
        return recorded if isinstance(recorded, ObjectDef) else recorded.definition()

    # -- properties ---------------------------------------------------------------------------

    @property
    def framework(self) -> str:
        """The framework of the model: ``torch``, ``keras``, ``sklearn`` or ``xgboost``."""
        return framework_model(self.model)[1]

    @property
    def net(self) -> Any:
        """The framework model itself (the torch module, the estimator, the Keras model)."""
        return framework_model(self.model)[0]

    @property
    def fitted(self) -> bool:
        """True once :meth:`fit` ran (or a trained Trainable was loaded)."""
        return self.result is not None

    # -- training -----------------------------------------------------------------------------

    def fit(
        self,
        train: Any,
        val: Any = None,
        *,
        seed: int | None = None,
        callbacks: Sequence[Any] = (),
    ) -> TrainResult:
        """Train on ``train`` (a supervised Dataset of ``(x, y)``), scoring ``val`` each epoch.

        With ``seed``, Python, numpy and the framework are seeded and the model
        is rebuilt from its definition first, so the same definition and seed
        give the same weights and score. Without it, torch and Keras models, and
        scikit-learn estimators trained with ``partial_fit`` (``Fit(epochs>1)``),
        continue from their current weights; a scikit-learn or XGBoost
        ``Fit(epochs=1)`` calls the estimator's ``fit``, which starts over (unless
        the estimator itself sets ``warm_start=True``). ``callbacks`` are added
        for this run only (e.g. a tuner's :class:`ReportCallback`).
        """
        framework = framework_model(self.model)[1]
        if seed is not None:
            seed_everything(seed, framework)
            self.model = self._model_definition().build()
            framework = framework_model(self.model)[1]
        run_callbacks = [*self.callbacks, *check_callbacks(callbacks, "fit()")]
        x, y = arrays(train, "train")
        val_arrays = arrays(val, "validation") if val is not None else None
        module = backend(framework)
        procedure = self.procedure if self.procedure is not None else module.default_procedure()
        metrics = procedure.metrics or (default_metrics(y) if module.scores(self.net) else ())
        progress = Progress(
            procedure=procedure,
            callbacks=run_callbacks,
            metrics=metrics,
            has_val=val_arrays is not None,
            has_loss=module.REPORTS_LOSS,
            framework=framework,
        )
        for callback in run_callbacks:
            hook = getattr(callback, "on_train_begin", None)
            if callable(hook):
                hook(self)
        job = FitJob(
            net=self.net,
            optimizer=self.optimizer,
            loss=self.loss,
            procedure=procedure,
            x=x,
            y=y,
            val=val_arrays,
            progress=progress,
            seed=seed,
        )
        module.fit(job)
        result = progress.result()
        self.result = result
        for callback in run_callbacks:
            hook = getattr(callback, "on_train_end", None)
            if callable(hook):
                hook(result)
        return result

    # -- inference ----------------------------------------------------------------------------

    def predict(self, data: Any) -> np.ndarray:
        """The model's outputs for ``data``: an array, or a Dataset of ``x`` or ``(x, y)``.

        Classifiers give class scores (one column per class) when they have
        them, regressors one value per sample.
        """
        net, framework = framework_model(self.model)
        x = inputs(data)
        return np.asarray(backend(framework).predict(net, x))

    def transform(self, data: Any) -> Any:
        """A supervised NumpyDataset of ``(outputs, y)``: the input of the next stage of a Pipe.

        Transformers (PCA, StandardScaler) give their ``transform``; models
        their outputs (:meth:`predict`).
        """
        from forgeml.data import NumpyDataset

        x, y = arrays(data, "transform")
        net, framework = framework_model(self.model)
        return NumpyDataset((backend(framework).transform(net, x), y), supervised=True)

    def evaluate(
        self, ds: Any, metrics: Iterable[str] | str = ("accuracy",), **options: Any
    ) -> dict[str, float]:
        """``metrics`` (names of :mod:`forgeml.metrics`) of the model's outputs on ``ds``.

        ``ds`` is a supervised Dataset of ``(x, y)`` (numpy, torch or
        TensorFlow) or an ``(x, y)`` tuple; ``options`` go to
        :func:`forgeml.metrics.compute` (``num_classes``).
        """
        from forgeml.metrics import compute

        x, y = arrays(ds, "evaluation")
        net, framework = framework_model(self.model)
        outputs = backend(framework).predict(net, x)
        result: dict[str, float] = compute(y, outputs, metrics, **options)
        return result

    # -- archives -----------------------------------------------------------------------------

    def save_object_imp(self, archive: Archive) -> None:
        if self.result is not None:
            archive.save(_RESULT, self.result.to_dict())

    def load_object_imp(self, archive: Archive) -> None:
        if _RESULT in archive:
            self.result = TrainResult.from_dict(archive.load(_RESULT))


def inputs(data: Any) -> np.ndarray:
    """The inputs ``x`` of an array, or of a Dataset of ``x`` or of ``(x, y)``, as numpy."""
    from forgeml.data import Dataset
    from forgeml.metrics._metric_set import to_numpy

    if isinstance(data, Dataset):
        if data.supervised:
            return arrays(data, "prediction")[0]
        parts = [to_numpy(x) for x in data.numpy()]
        if not parts:
            raise TrainError("The dataset to predict on is empty.")
        return np.concatenate(parts) if data.batched else np.stack(parts)
    return to_numpy(data)

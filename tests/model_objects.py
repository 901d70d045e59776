"""Objects holding real models, importable by the tests and their subprocesses."""

from __future__ import annotations

from typing import Any

import torch

from forgeml import Object


class TorchClassifier(Object):
    """A small MLP with an optimizer; both are saved as state."""

    def __init__(self, inputs: int, classes: int, hidden: int = 32, lr: float = 1e-2) -> None:
        self.net = torch.nn.Sequential(
            torch.nn.Linear(inputs, hidden),
            torch.nn.BatchNorm1d(hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, classes),
        )
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)

    def fit(self, x: Any, y: Any, steps: int = 30) -> None:
        xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
        self.net.train()
        for _ in range(steps):
            self.optimizer.zero_grad()
            torch.nn.functional.cross_entropy(self.net(xt), yt).backward()
            self.optimizer.step()

    def predict(self, x: Any) -> Any:
        self.net.eval()
        with torch.no_grad():
            return self.net(torch.as_tensor(x, dtype=torch.float32)).numpy()


class TorchNet(Object, torch.nn.Module):
    """An Object that is itself a torch module: its whole state_dict is saved."""

    def __init__(self, inputs: int, classes: int) -> None:
        super().__init__()
        self.body = torch.nn.Linear(inputs, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Ensemble(Object):
    """One Object holding every framework: sklearn, xgboost, keras and a nested torch Object."""

    def __init__(self, seed: int = 0) -> None:
        import keras
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from xgboost import XGBClassifier

        self.models = {
            "logreg": make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
            "forest": RandomForestClassifier(n_estimators=20, random_state=seed),
            "xgb": XGBClassifier(n_estimators=20, max_depth=3, random_state=seed),
        }
        keras.utils.set_random_seed(seed)
        self.keras_model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
        )
        self.keras_model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        self.torch_part = TorchClassifier(4, 3, hidden=8)

    def fit(self, x: Any, y: Any) -> None:
        for model in self.models.values():
            model.fit(x, y)
        self.keras_model.fit(x, y, epochs=2, verbose=0)
        self.torch_part.fit(x, y)

    def predict(self, x: Any) -> dict[str, Any]:
        out = {name: model.predict_proba(x) for name, model in self.models.items()}
        out["keras"] = self.keras_model.predict(x, verbose=0)
        out["torch"] = self.torch_part.predict(x)
        return out

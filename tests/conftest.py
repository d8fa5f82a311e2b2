import numpy as np
import pytest

from bench.evaluation import data


@pytest.fixture(autouse=True)
def _repository_data(monkeypatch):
    """Tests read the datasets and checkpoints committed in the repository, whatever the caller's
    environment points at (a test that wants a variable sets it itself)."""
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    monkeypatch.delenv(data.CHECKPOINTS_ENV, raising=False)


@pytest.fixture
def planted():
    """Synthetic data with obvious outliers: 400 normal training rows in a small box of [0, 1]^8,
    a test set of 150 normal rows and 30 planted outliers far from it. Returns (X_train, X_test, y)."""
    rng = np.random.default_rng(123)
    center = rng.uniform(0.3, 0.7, size=8)
    X_train = center + 0.05 * rng.standard_normal((400, 8))
    normal = center + 0.05 * rng.standard_normal((150, 8))
    outliers = rng.uniform(0.0, 1.0, size=(30, 8))
    outliers[:, :4] = np.where(center[:4] > 0.5, 0.02, 0.98)  # far from the centre on 4 features
    X_test = np.vstack([normal, outliers])
    y = np.r_[np.zeros(150, int), np.ones(30, int)]
    return X_train, X_test, y

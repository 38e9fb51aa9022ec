from __future__ import annotations

import pytest
import torch
import torchvision

from search.embedders import get_embedder


@pytest.fixture
def resnet18_weights(settings, tmp_path):
    """A randomly initialised ResNet-18 state dict, saved the way torchvision ships its weights
    and named by settings; the per-process model cache is emptied around the test."""
    path = tmp_path / "resnet18-random.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    settings.EMBEDDING_WEIGHTS = {"resnet18": str(path)}
    get_embedder.cache_clear()
    yield path
    get_embedder.cache_clear()


@pytest.fixture
def fake_embedder(monkeypatch):
    """Every model key answers with one FakeEmbedder (in this process)."""
    from tests.search.helpers import FakeEmbedder

    embedder = FakeEmbedder()
    monkeypatch.setattr("search.embedders.get_embedder", lambda key: embedder)
    return embedder

"""The real models: loading paths, normalisation, and one preprocessing for index and query."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from catalog.fetch import image_fetch
from search.embedders import WeightsMissing, get_embedder
from tests import images


@pytest.fixture
def fresh_models():
    get_embedder.cache_clear()
    yield
    get_embedder.cache_clear()


def test_efficientnet_lite0_is_offline_normalised_and_stable():
    embedder = get_embedder("efficientnet_lite0")
    data = images.jpeg_bytes(320, 240, seed=4)
    vectors = embedder.embed_bytes([data, data, images.png_bytes(320, 240, seed=40)])
    assert vectors.shape == (3, 1280) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert float(vectors[0] @ vectors[1]) >= 0.999
    assert float(vectors[0] @ vectors[2]) < 0.99


def test_preprocessing_is_torchvisions_resize_and_normalisation():
    """The fused multiply-add gives the tensors torchvision's transforms give, so vectors
    indexed before it stay comparable with queries after it."""
    from torchvision.transforms import v2

    from catalog.images import image_open_rgb

    embedder = get_embedder("efficientnet_lite0")
    spec = embedder.spec
    reference = v2.Compose([
        v2.Resize((spec.input_size, spec.input_size), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(spec.mean), std=list(spec.std)),
    ])  # fmt: skip
    for data in (images.jpeg_bytes(1024, 768, seed=5), images.png_bytes(300, 500, seed=6)):
        image = image_open_rgb(data, min_side=spec.decode_side)
        expected = reference(torch.from_numpy(np.array(image)).permute(2, 0, 1))
        tensor = embedder.preprocess(image)
        assert tensor.shape == (3, spec.input_size, spec.input_size) and tensor.is_contiguous()
        assert torch.allclose(tensor, expected, atol=1e-5, rtol=0)


def test_upload_and_url_give_the_same_vector(local_server):
    data = images.jpeg_bytes(300, 200, seed=8)
    url = local_server.add_bytes("/photo.jpg", data, "image/jpeg")
    embedder = get_embedder("efficientnet_lite0")
    by_upload = embedder.embed_bytes([data])[0]
    by_url = embedder.embed_bytes([image_fetch(url=url).data])[0]
    assert float(by_upload @ by_url) >= 0.999


def test_resnet_loads_weights_from_the_configured_file(resnet18_weights):
    embedder = get_embedder("resnet18")
    vectors = embedder.embed_bytes([images.png_bytes(seed=1), images.png_bytes(seed=1)])
    assert vectors.shape == (2, 512)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert float(vectors[0] @ vectors[1]) >= 0.999
    state = torch.load(resnet18_weights, weights_only=True)
    assert torch.equal(embedder.network.conv1.weight.cpu(), state["conv1.weight"])


def test_resnet_without_weights_says_how_to_provide_them(fresh_models, settings, monkeypatch, tmp_path):
    settings.EMBEDDING_WEIGHTS = {}
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    with pytest.raises(WeightsMissing) as caught:
        get_embedder("resnet50")
    assert "RESNET50_WEIGHTS" in caught.value.message and "download" in caught.value.message
    settings.EMBEDDING_WEIGHTS = {"resnet101": str(tmp_path / "nope.pth")}
    with pytest.raises(WeightsMissing, match="does not exist"):
        get_embedder("resnet101")


def test_cpu_is_used_without_cuda(settings):
    from search.embedders import embedding_device

    settings.EMBEDDING_DEVICE = "auto"
    assert embedding_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    settings.EMBEDDING_DEVICE = "cpu"
    assert embedding_device().type == "cpu"


def _cuda_embedder(settings):
    settings.EMBEDDING_DEVICE = "cuda"
    get_embedder.cache_clear()
    return get_embedder("efficientnet_lite0")


def test_encoded_images_embed_alone_and_fail_alone():
    embedder = get_embedder("efficientnet_lite0")
    photo, drawing = images.jpeg_bytes(320, 240, seed=4), images.png_bytes(320, 240, seed=40)
    results = embedder.embed_encoded([photo, b"garbage", drawing, images.truncated_jpeg()], threads=2)
    assert isinstance(results[1], Exception) and isinstance(results[3], Exception)
    expected = embedder.embed_bytes([photo, drawing])
    assert np.allclose(results[0], expected[0], atol=1e-5) and np.allclose(results[2], expected[1], atol=1e-5)
    assert embedder.embed_encoded([]) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_decoding_agrees_with_the_cpu_path(settings, fresh_models):
    photos = [images.jpeg_bytes(640, 480, seed=seed) for seed in range(6)]
    odd = [images.cmyk_jpeg(), images.exif_rotated_jpeg(), images.png_bytes(320, 240, seed=3), b"garbage"]
    cpu = get_embedder("efficientnet_lite0").embed_bytes(photos + odd[:3])
    results = _cuda_embedder(settings).embed_encoded(photos + odd, threads=2)
    assert isinstance(results[-1], Exception)
    for vector, reference in zip(results[:-1], cpu, strict=True):
        assert float(vector @ reference) >= 0.99  # fp16, nvJPEG and full-size resampling: the same image


def test_which_jpegs_the_gpu_decodes():
    from search.embedders import _plain_jpeg

    photo = images.picture(80, 60, seed=2)
    assert _plain_jpeg(images.jpeg_bytes(80, 60))
    assert _plain_jpeg(images.encode(photo, "JPEG", progressive=True))
    assert _plain_jpeg(images.encode(photo.convert("L"), "JPEG"))
    assert _plain_jpeg(images.exif_rotated_jpeg(photo, orientation=1))  # EXIF, upright
    assert not _plain_jpeg(images.exif_rotated_jpeg(photo, orientation=6))
    assert not _plain_jpeg(images.cmyk_jpeg())
    assert not _plain_jpeg(images.png_bytes())
    assert not _plain_jpeg(b"\xff\xd8\xff\xe0garbage")
    assert not _plain_jpeg(images.truncated_jpeg()[:20])

"""No Docker engine runs here: check that the production topology file says what it must."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def load() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_volumes():
    compose = load()
    assert set(compose["services"]) == {"db", "redis", "web", "worker-gpu", "worker-cpu"}
    assert {"pgdata", "media"} <= set(compose["volumes"])
    assert "pgvector" in compose["services"]["db"]["image"]
    for name, service in compose["services"].items():
        assert "healthcheck" in service, f"{name} has no healthcheck"


def test_web_runs_gunicorn_after_migrating():
    web = load()["services"]["web"]
    assert "migrate --noinput" in web["command"] and "gunicorn simsite.wsgi" in web["command"]
    assert web["environment"]["DEBUG"] == "0"
    assert "/api/v1/health/" in " ".join(web["healthcheck"]["test"])


def test_gpu_worker_takes_model_work_on_an_nvidia_device():
    gpu = load()["services"]["worker-gpu"]
    command = gpu["command"].split()
    assert command[:4] == ["celery", "-A", "simsite", "worker"]
    assert command[command.index("-Q") + 1] == "embed"
    assert command[command.index("--pool") + 1] == "solo"
    assert command[command.index("--concurrency") + 1] == "1"
    assert command[command.index("--prefetch-multiplier") + 1] == "1"
    assert gpu["environment"]["EMBEDDING_DEVICE"] == "cuda"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_cpu_worker_takes_the_default_queue():
    command = load()["services"]["worker-cpu"]["command"].split()
    assert command[command.index("-Q") + 1] == "default"


def test_app_services_share_database_broker_and_media():
    services = load()["services"]
    for name in ("web", "worker-gpu", "worker-cpu"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://simsite:")
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert "media:/data/media" in services[name]["volumes"]

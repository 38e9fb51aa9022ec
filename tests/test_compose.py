"""No Docker engine runs here: check that the production topology file says what it must."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def load() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_volumes():
    compose = load()
    assert set(compose["services"]) == {"db", "redis", "web", "worker-gpu", "worker-query", "worker-cpu", "beat"}
    assert {"pgdata", "media", "private"} <= set(compose["volumes"])
    # Signatures live apart from the media, in a volume of their own.
    assert compose["services"]["web"]["environment"]["PRIVATE_MEDIA_ROOT"] == "/data/private"
    assert "pgvector" in compose["services"]["db"]["image"]
    for name, service in compose["services"].items():
        if name != "beat":  # beat serves nothing to check; a dead beat is restarted
            assert "healthcheck" in service, f"{name} has no healthcheck"


def test_beat_runs_the_reconciler_schedule():
    from django.conf import settings

    command = load()["services"]["beat"]["command"].split()
    assert command[:4] == ["celery", "-A", "simsite", "beat"]
    assert settings.CELERY_BEAT_SCHEDULE["reconcile"]["task"] == "search.tasks.reconcile"


def test_query_worker_takes_only_the_query_queue_and_the_web_sends_queries_there():
    services = load()["services"]
    command = services["worker-query"]["command"].split()
    assert command[command.index("-Q") + 1] == "query"
    assert services["web"]["environment"]["SEARCH_QUERY_EMBEDDER"] == "worker"


@pytest.mark.django_db(transaction=True)
def test_web_healthcheck_gets_200_from_a_running_app(live_server, settings, monkeypatch):
    """Run the healthcheck command as compose would, against a live app configured like
    production: host validation on, DEBUG off, TLS redirect on (health is exempt)."""
    import subprocess
    import sys

    test = load()["services"]["web"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "scripts/healthcheck.py"]
    settings.ALLOWED_HOSTS = ["shop.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    url = f"{live_server.url}/api/v1/health/"
    env = {"PATH": "/usr/bin:/bin", "ALLOWED_HOSTS": "shop.example.com,www.shop.example.com"}
    result = subprocess.run([sys.executable, *test[2:3], url], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HTTP 200" in result.stdout
    # What the old check did (the container's own address as Host) is refused by Django.
    bare = subprocess.run(
        [sys.executable, "-c", f"import urllib.request; urllib.request.urlopen({url!r}, timeout=5)"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bare.returncode != 0 and "400" in bare.stderr


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
    for name in ("web", "worker-gpu", "worker-query", "worker-cpu", "beat"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://simsite:")
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert "media:/data/media" in services[name]["volumes"]


def test_the_production_image_installs_no_test_tooling():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install -r requirements.txt" in dockerfile and "requirements-dev" not in dockerfile
    app = {line.split("==")[0].split("[")[0].lower() for line in (ROOT / "requirements.txt").read_text().splitlines()
           if line and not line.startswith("#")}  # fmt: skip
    assert not app & {"pytest", "pytest-django", "schemathesis", "hypothesis", "playwright", "ruff", "faiss-cpu"}
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text()

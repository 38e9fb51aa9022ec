from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from simsite.env import env_bool, env_choice, env_int, env_list

ROOT = Path(__file__).resolve().parents[1]


def test_env_helpers_fail_loudly(monkeypatch):
    monkeypatch.setenv("X_BOOL", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_BOOL"):
        env_bool("X_BOOL", False)
    monkeypatch.setenv("X_BOOL", "Yes")
    assert env_bool("X_BOOL", False) is True
    monkeypatch.setenv("X_INT", "12MB")
    with pytest.raises(ImproperlyConfigured, match="X_INT"):
        env_int("X_INT", 1)
    monkeypatch.setenv("X_INT", "0")
    with pytest.raises(ImproperlyConfigured, match=">= 1"):
        env_int("X_INT", 5, minimum=1)
    monkeypatch.setenv("X_LIST", " a.com, b.com ,,")
    assert env_list("X_LIST", []) == ["a.com", "b.com"]
    monkeypatch.setenv("X_CHOICE", "tpu")
    with pytest.raises(ImproperlyConfigured, match="X_CHOICE"):
        env_choice("X_CHOICE", "auto", {"auto", "cpu", "cuda"})


def run_check(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "SECURE_SSL_REDIRECT"}}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_configuration_passes_check_deploy():
    result = run_check(DEBUG="0", SECRET_KEY="k" * 20 + "-production-secret-key-with-enough-entropy-0123456789")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_secret_key_required_when_debug_is_off():
    result = run_check(DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_bad_values_fail_at_startup():
    result = run_check(DEBUG="0", SECRET_KEY="x" * 60, IMAGE_MAX_UPLOAD_BYTES="lots")
    assert result.returncode != 0 and "IMAGE_MAX_UPLOAD_BYTES must be an integer" in result.stderr
    result = run_check(DEBUG="0", SECRET_KEY="x" * 60, DATABASE_URL="sqlite:///db.sqlite3")
    assert result.returncode != 0 and "must be a PostgreSQL URL" in result.stderr


def test_openapi_schema_generates_without_warnings():
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file", os.devnull],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr

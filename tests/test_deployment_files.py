"""The Dockerfile and compose.yaml: linted, and honest about what they build and run."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]


def stages() -> list[list[dict[str, str]]]:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    out: list[list[dict[str, str]]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            out.append([])
        if out and instruction["instruction"] != "COMMENT":
            out[-1].append(instruction)
    return out


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compiler_only_in_the_build_stage() -> None:
    build, runtime = stages()
    assert "gcc" in " ".join(i["value"] for i in build if i["instruction"] == "RUN")
    assert all("gcc" not in i["value"] for i in runtime)
    assert any(i["instruction"] == "COPY" and "--from=build" in i["value"] for i in runtime)


def test_runtime_is_non_root_with_health_check_and_serve() -> None:
    runtime = stages()[-1]
    users = [i["value"] for i in runtime if i["instruction"] == "USER"]
    assert users and not users[-1].startswith(("root", "0"))
    health = " ".join(i["value"] for i in runtime if i["instruction"] == "HEALTHCHECK")
    assert "/readyz" in health
    cmd = [i["value"] for i in runtime if i["instruction"] == "CMD"][-1]
    assert '"miaopi", "serve"' in cmd


def test_copied_paths_exist_and_versions_agree() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for stage in stages():
        for instruction in stage:
            if instruction["instruction"] == "COPY" and "--from" not in instruction["value"]:
                for source in instruction["value"].split()[:-1]:
                    assert (ROOT / source).exists(), source
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert f"miaopi=={project['version']}" in text
    python = re.findall(r"FROM python:(\d+)\.(\d+)", text)
    assert python and all((3, 11) <= (int(a), int(b)) < (3, 13) for a, b in python)


def test_compose_wires_postgres_and_redis_with_contract_variables() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert {"postgres", "redis", "miaopi"} <= set(services)
    env = services["miaopi"]["environment"]
    assert env["MIAOPI_DATABASE_URL"].startswith("postgresql://")
    assert env["MIAOPI_REDIS_URL"].startswith("redis://")
    assert "MIAOPI_API_KEYS" in env

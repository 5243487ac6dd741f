"""Static checks of the container images: deploy/docker/Dockerfile (CPU) and Dockerfile.gpu."""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import pytest
from scripts.pyproject_deps import name_of, requirements

from inferline.config import Settings
from tests.deploy.dockerfile import Instruction, Stage, parse
from tests.deploy.manifests import DOCKER, REPO

DOCKERFILES = ["Dockerfile", "Dockerfile.gpu"]
# An exact release (x.y.z in the tag), a digest, or both; never "latest" or "3.11-slim".
PINNED = re.compile(r"^[\w./-]+(:[\w.-]*\d+\.\d+\.\d+[\w.-]*)?(@sha256:[0-9a-f]{64})?$")
# What the runtime stage may take from earlier stages: the runtime environment, the Python
# it runs on, the model directory and the uv binary. Not /opt/build (the one with torch).
RUNTIME_COPIES = {"/opt/venv", "/opt/python", "/opt/inferline/model", "/uv"}


def stages(name: str) -> list[Stage]:
    return parse(DOCKER / name)


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for word in shlex.split(instruction.args):
            key, _, value = word.partition("=")
            env[key] = value
    return env


@pytest.mark.parametrize("name", DOCKERFILES)
def test_bases_are_pinned(name: str) -> None:
    all_stages = stages(name)
    names = {s.name for s in all_stages}
    external = [s.base for s in all_stages if s.base not in names]
    assert external
    for base in external:
        assert PINNED.match(base) and (":" in base or "@" in base), base
        assert not base.endswith(":latest"), base


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runs_as_non_root(name: str) -> None:
    final = stages(name)[-1]
    users = final.all("USER")
    assert users, "the runtime stage sets no USER"
    user, _, group = users[-1].args.partition(":")
    # Numeric, so that Kubernetes' runAsNonRoot can verify it without a runAsUser.
    assert user.isdigit() and int(user) > 0, users[-1].args
    assert not group or (group.isdigit() and int(group) > 0)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_runtime_stage_has_no_torch(name: str) -> None:
    all_stages = stages(name)
    final = all_stages[-1]
    for instruction in final.instructions:
        assert "torch" not in instruction.args and "[build]" not in instruction.args
    for copy in final.all("COPY"):
        flags, words = copy.flags_and_words()
        if "from" in flags:
            assert set(words[:-1]) <= RUNTIME_COPIES, copy.args
    # Where torch is installed, it goes into /opt/build, never into the copied /opt/venv.
    torch_runs = [
        i for s in all_stages for i in s.all("RUN") if "torch" in i.args or "[build]" in i.args
    ]
    assert torch_runs
    for run in torch_runs:
        assert "/opt/build" in run.args and "/opt/venv" not in run.args, run.args


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dependency_layers_come_before_the_source_and_keep_torch_out(name: str) -> None:
    """The requirements are installed from pyproject.toml before src/ is copied (a source
    change reuses those layers), and what goes into /opt/venv lists no torch."""
    lists: dict[str, list[str]] = {}  # requirements file -> the script's arguments
    for stage in stages(name):
        source_copied = False
        for instruction in stage.instructions:
            if instruction.keyword == "COPY" and "src" in instruction.flags_and_words()[1][:-1]:
                source_copied = True
            if instruction.keyword != "RUN":
                continue
            for args, target in re.findall(
                r"pyproject_deps\.py([^>&]*)>\s*(\S+)", instruction.args
            ):
                assert not source_copied, "the requirements are listed after src/ is copied"
                lists[target] = args.split()
            for used in re.findall(r"-r\s+(\S+)", instruction.args):
                assert not source_copied, instruction.args
                listed = requirements(REPO / "pyproject.toml", *_extras_and_drops(lists[used]))
                names = {name_of(r) for r in listed}
                assert "inferline" not in names
                if "/opt/venv" in instruction.args:
                    assert "torch" not in names and "transformers" not in names, listed
                else:
                    assert "/opt/build" in instruction.args and "torch" in names
    assert lists


def _extras_and_drops(args: list[str]) -> tuple[list[str], list[str]]:
    drops = [args[i + 1] for i, a in enumerate(args) if a == "--drop"]
    extras = [
        a for i, a in enumerate(args) if a != "--drop" and (i == 0 or args[i - 1] != "--drop")
    ]
    return extras, drops


def test_requirement_lists_follow_pyproject() -> None:
    pyproject = REPO / "pyproject.toml"
    runtime = requirements(pyproject, [], [])
    assert any(name_of(r) == "onnxruntime" for r in runtime)
    build = requirements(pyproject, ["build"], [])
    assert "torch==2.13.0" in build and set(runtime) < set(build)
    gpu = requirements(pyproject, ["gpu"], ["onnxruntime"])
    assert {name_of(r) for r in gpu} == {name_of(r) for r in runtime} - {"onnxruntime"} | {
        "nvidia-ml-py"
    }
    with pytest.raises(SystemExit, match="no such extra"):
        requirements(pyproject, ["nope"], [])


@pytest.mark.parametrize("name", DOCKERFILES)
def test_model_is_built_into_the_image(name: str) -> None:
    all_stages = stages(name)
    assert any("model build" in i.args for s in all_stages for i in s.all("RUN"))
    env = env_of(all_stages[-1])
    copies = [c.flags_and_words() for c in all_stages[-1].all("COPY")]
    copied = [words[-1] for flags, words in copies if "from" in flags]
    assert env["INFERLINE_MODEL_DIR"] in copied


@pytest.mark.parametrize("name", DOCKERFILES)
def test_read_only_root_filesystem_friendly(name: str) -> None:
    env = env_of(stages(name)[-1])
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == "/tmp"  # the manifests mount an emptyDir there
    # The default model dir is under HOME; the image's is not, so nothing is looked up there.
    assert not env["INFERLINE_MODEL_DIR"].startswith("/tmp")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_healthcheck_is_exec_form_on_a_real_path(name: str) -> None:
    checks = stages(name)[-1].all("HEALTHCHECK")
    assert len(checks) == 1
    # The module probes /health/live of the API or the worker (tests/deploy/test_probes.py).
    assert checks[0].exec_form == ["python", "-m", "inferline.healthcheck"], checks[0].args


@pytest.mark.parametrize("name", DOCKERFILES)
def test_entrypoint_and_cmd_are_exec_form(name: str) -> None:
    final = stages(name)[-1]
    entrypoint, cmd = final.all("ENTRYPOINT"), final.all("CMD")
    assert entrypoint and cmd
    # exec form: inferline is PID 1, so SIGTERM reaches it and it drains (docs/operations.md).
    assert entrypoint[-1].exec_form == ["inferline"]
    assert cmd[-1].exec_form == ["serve"]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_exposes_the_default_ports(name: str) -> None:
    exposed = {int(p) for i in stages(name)[-1].all("EXPOSE") for p in i.args.split()}
    settings = Settings()
    assert exposed == {settings.port, settings.grpc_port, settings.worker_metrics_port}


def _context_copies(name: str) -> list[Instruction]:
    return [c for s in stages(name) for c in s.all("COPY") if "from" not in c.flags_and_words()[0]]


def _included(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` in the build context (the last match wins)."""
    parts = Path(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for line in patterns:
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatch(c, pattern) for c in candidates):
            included = negate
    return included


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_copy_source_exists_and_is_in_the_context(name: str) -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    sources = [src for c in _context_copies(name) for src in c.flags_and_words()[1][:-1]]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert _included(source, patterns), f"{source} is excluded by .dockerignore"
    assert not _included(".venv", patterns) and not _included(".git", patterns)


def test_gpu_image_uses_cuda() -> None:
    final = stages("Dockerfile.gpu")[-1]
    assert final.base.startswith("nvidia/cuda:") and "cudnn-runtime" in final.base
    assert env_of(final)["INFERLINE_DEVICE"] == "cuda"
    runs = " ".join(i.args for s in stages("Dockerfile.gpu") for i in s.all("RUN"))
    assert re.search(r"onnxruntime-gpu==\d+\.\d+\.\d+", runs)

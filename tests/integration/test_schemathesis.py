"""schemathesis against a real server and its own /openapi.json: every operation, the
examples, coverage and fuzzing phases, and the default checks (no 5xx, responses and status
codes as documented, valid requests served, invalid ones refused).

schemathesis' pytest loader for fixtures (``schemathesis.pytest.from_fixture``) does not run
under pytest 9 (it sets ``Function._nodeid``), so the test drives schemathesis' engine, the
Python API under ``st run``. The run is bounded by the examples per operation (about 15 s on 2
idle cores) and deterministic, so that CI sends the same requests every run.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis import Case, CheckContext, Response
from schemathesis.checks import not_a_server_error, positive_data_acceptance
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, StopReason, events

from tests.conftest import Server

# A body over the size limit is refused before it is read, whatever the schema says of it.
SERVED = ["2xx", "401", "403", "404", "409", "413", "429", "5xx"]
REFUSED = ["400", "401", "403", "404", "405", "406", "413", "415", "422", "429"]  # no 5xx
CONFIG: dict[str, Any] = {
    "seed": 1,
    "request-timeout": 30,
    "workers": 1,
    # No max-time: with one, schemathesis fuzzes until that time is up.
    "generation": {"max-examples": 100, "deterministic": True, "database": "none"},
    # Stateful testing follows links between operations that create and read resources; this
    # API has none.
    "phases": {"stateful": {"enabled": False}},
    "checks": {
        # Both are replaced by the checks below, which call them.
        "not_a_server_error": {"enabled": False},
        "positive_data_acceptance": {"enabled": False, "expected-statuses": SERVED},
        # A 504 means that the server took the request: invalid data must not get one.
        "negative_data_rejection": {"expected-statuses": REFUSED},
    },
}
# The test server has no Redis, so the job queue answers 503 to everything;
# tests/integration/test_queue_http.py tests it with one.
NOT_HERE = r"^/v1/jobs"
# The rules of an OIP request across fields, which JSON Schema cannot state: the operation's
# description gives them, and the server answers 400 naming the rule.
CROSS_FIELD = re.compile(r"has shape \[\d+\] but \d+ elements|requested more than once|no output")
# A text of only control, format or combining characters, which the model reads as empty:
# the text schema's description says so, since its pattern cannot name every such character.
UNREAD = re.compile(r"has nothing the model reads")


def sets_deadline(case: Case[Any]) -> bool:
    """Whether the request set its own deadline, which may pass before the model runs."""
    if any(name.lower() == "x-request-timeout" for name in case.headers or {}):
        return True
    parameters = case.body.get("parameters") if isinstance(case.body, dict) else None
    return isinstance(parameters, dict) and "timeout" in parameters


@schemathesis.check
def no_server_error(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """not_a_server_error, except for the documented 504 when a deadline that the client set
    passed before the model ran."""
    if response.status_code == 504 and sets_deadline(case):
        return None
    result: bool | None = not_a_server_error(ctx, response, case)
    return result


@schemathesis.check
def valid_data_served(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """positive_data_acceptance, except for an OIP request that breaks a rule across fields,
    and a text the model reads as empty."""
    rule = response.status_code == 400 and CROSS_FIELD.search(response.text)
    if case.path.endswith("/infer") and rule:
        return None
    if response.status_code in (400, 422) and UNREAD.search(response.text):
        return None
    result: bool | None = positive_data_acceptance(ctx, response, case)
    return result


def run(url: str) -> tuple[list[str], dict[str, int], events.EngineFinished | None]:
    """Failures, the cases sent per operation, and how the run ended."""
    config = SchemathesisConfig.from_dict(CONFIG)
    loaded = schemathesis.openapi.from_url(url + "/openapi.json", config=config)
    schema = loaded.exclude(path_regex=NOT_HERE)
    failures: list[str] = []
    cases: dict[str, int] = {}
    finished = None
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            label = event.recorder.label
            cases[label] = cases.get(label, 0) + len(event.recorder.cases)
            failures.extend(describe(event))
        elif isinstance(event, events.NonFatalError):
            failures.append(f"{event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            failures.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            finished = event
    return failures, cases, finished


def describe(event: events.ScenarioFinished) -> list[str]:
    """Each failed check: the operation, the check, the response, and a curl to replay it."""
    found = []
    recorder = event.recorder
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.status is not Status.FAILURE or check.failure_info is None:
                continue
            interaction = recorder.interactions.get(case_id)
            response = interaction.response if interaction is not None else None
            answer = f"{response.status_code} {response.content[:300]!r}" if response else "-"
            found.append(
                f"{recorder.label} [{event.phase.name}] {check.name}: "
                f"{check.failure_info.failure.title} -> {answer}\n"
                f"    {recorder.cases[case_id].value.as_curl_command()}"
            )
    return found


@pytest.mark.timeout(110)
def test_the_server_keeps_its_openapi_document(server: Server) -> None:
    spec = httpx.get(server.url + "/openapi.json").json()
    failures, cases, finished = run(server.url)
    assert not failures, "\n".join(failures)
    assert finished is not None and finished.stop_reason is StopReason.COMPLETED
    paths = {path: item for path, item in spec["paths"].items() if not re.match(NOT_HERE, path)}
    operations = {f"{method.upper()} {path}" for path, item in paths.items() for method in item}
    # schemathesis leaves out the operation that served the schema it tests.
    assert set(cases) == operations - {"GET /openapi.json"}
    assert httpx.get(server.url + "/health/ready").status_code == 200

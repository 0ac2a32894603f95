"""One process's submit timings, for bench.submit: a script run with the source tree to measure (this one
or an older checkout) in BENCH_TREE, so it imports nothing of bench and only what old and new trees share:
``api.routes.comparisons.submit_comparison``, ``api.auth.LOCAL_PRINCIPAL``, ``api.main.create_app``.

It migrates the database in OPTIBENCH_DATABASE_URL with the tree's own migrations, then times
BENCH_SUBMITS submits of BENCH_SPEC (JSON) two ways: ``handler``, the request's own work in-process
(validating the body into a ComparisonSpec, the route function with a new session: limits, inserts,
commit, publish, the response body); ``asgi``, a POST through the whole app (auth, FastAPI, the thread
hop) with an API key, from a TestClient in the same process. Prints one JSON line: per way, the CPU
(process_time) and wall milliseconds per submit. With BENCH_PROFILE=<path>, the handler's submits run
under cProfile, written to that path."""

from __future__ import annotations

import json
import os
import sys
import time

sys.path[0] = os.environ["BENCH_TREE"]  # not bench/, whose api.py would shadow the tree's api package


def _timed(submit, count: int) -> dict[str, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        submit()
    return {
        "cpu_ms": (time.process_time() - cpu) * 1000 / count,
        "wall_ms": (time.perf_counter() - wall) * 1000 / count,
    }


def main() -> None:
    from fastapi.testclient import TestClient
    from sqlalchemy.orm import Session

    from api.auth import LOCAL_PRINCIPAL
    from api.main import create_app
    from api.routes.comparisons import submit_comparison
    from db.migrate import upgrade
    from db.models import LOCAL_TEAM_ID, MEMBER
    from db.session import new_session
    from engine.spec import ComparisonSpec
    from optibench.settings import get_settings

    try:
        from services.keys import issue_key
    except ImportError:  # before the service layer
        from api.auth import issue_key  # type: ignore[attr-defined,no-redef]

    settings = get_settings()
    upgrade(settings.database_url)
    body = json.loads(os.environ["BENCH_SPEC"])
    count, warm = int(os.environ.get("BENCH_SUBMITS", "200")), 20
    with new_session() as session:
        _, key = issue_key(session, LOCAL_TEAM_ID, "bench", MEMBER)
        session.commit()

    def handler() -> None:
        session: Session = new_session()
        try:
            response = submit_comparison(ComparisonSpec.model_validate(body), session, settings, LOCAL_PRINCIPAL)
            assert response.status_code == 202, response.body
        finally:
            session.close()

    results = {}
    with TestClient(create_app(), headers={"Authorization": f"Bearer {key}"}) as client:

        def asgi() -> None:
            response = client.post("/api/v1/comparisons", json=body)
            assert response.status_code == 202, response.text

        for name, submit in (("handler", handler), ("asgi", asgi)):
            for _ in range(warm):
                submit()
            results[name] = _timed(submit, count)
        if profile := os.environ.get("BENCH_PROFILE"):
            import cProfile

            with cProfile.Profile(time.process_time) as profiler:  # CPU, as the figures
                _timed(handler, count)
            profiler.dump_stats(profile)
    print(json.dumps(results))


if __name__ == "__main__":
    main()

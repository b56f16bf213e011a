"""Service-account tokens verified per second, one thread, valid and each kind of invalid.

.venv/bin/python benchmarks/bench_tokens.py   # writes benchmarks/results/tokens.json
"""

from __future__ import annotations

import asyncio
import json
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from raygate.authn.jwt import ServiceAccountTokenAuthenticator
from raygate.store.tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER, SigningKey, issue_token

RESULTS = Path(__file__).parent / "results" / "tokens.json"
VERIFICATIONS = 5000
UID = "00000000-0000-4000-8000-000000000000"


def _tokens(key: SigningKey, foreign: SigningKey) -> dict[str, str]:
    def make(signer: SigningKey = key, **kw: object) -> str:
        options: dict[str, object] = {"signing_key": signer, "duration": timedelta(hours=1)}
        options.update(kw)
        return issue_token("default", "ray-user", UID, **options)  # type: ignore[arg-type]

    valid = make()
    head, body, signature = valid.split(".")
    flipped = ("A" if signature[5] != "A" else "B").join((signature[:5], signature[6:]))
    return {
        "valid": valid,
        "bad_signature": f"{head}.{body}.{flipped}",
        "other_key": make(foreign),
        "expired": make(now=datetime.now(UTC) - timedelta(hours=2)),
        "wrong_audience": make(audiences=["someone-else"]),
        "garbage": "not-a-token",
    }


def _measure(check: Callable[[], object]) -> float:
    start = time.perf_counter()
    for _ in range(VERIFICATIONS):
        check()
    return (time.perf_counter() - start) / VERIFICATIONS


async def _run() -> list[dict[str, object]]:
    key, foreign = SigningKey.generate(), SigningKey.generate()
    loop_results = []
    tokens = _tokens(key, foreign)
    cases = [(label, token, 0) for label, token in tokens.items()]
    cases.append(("valid, seen before (verified-token cache)", tokens["valid"], 4096))
    for label, token, cache_size in cases:
        authenticator = ServiceAccountTokenAuthenticator(
            [key.public_key],
            DEFAULT_ISSUER,
            [DEFAULT_AUDIENCE],
            lambda ns, name: UID,
            cache_size=cache_size,
        )
        expected_valid = label.startswith("valid")
        assert (await authenticator.authenticate_token(token) is not None) == expected_valid

        # authenticate_token never awaits, so stepping its coroutine measures verification only.
        def check(
            authenticator: ServiceAccountTokenAuthenticator = authenticator, token: str = token
        ) -> None:
            coroutine = authenticator.authenticate_token(token)
            try:
                coroutine.send(None)
            except StopIteration:
                pass

        seconds = _measure(check)
        loop_results.append(
            {
                "token": label,
                "us_per_verification": round(seconds * 1e6, 2),
                "verifications_per_second": int(1 / seconds),
            }
        )
    return loop_results


def main() -> None:
    results = asyncio.run(_run())
    report = {
        "benchmark": (
            "ServiceAccountTokenAuthenticator.authenticate_token, one thread, RS256 2048; "
            "first sight of each token unless noted"
        ),
        "verifications_per_measurement": VERIFICATIONS,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

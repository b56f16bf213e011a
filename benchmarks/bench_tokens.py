"""Service-account tokens verified per second, one thread, valid and each kind of invalid.

.venv/bin/python benchmarks/bench_tokens.py [--smoke] [--results-dir DIR]   # results/tokens.json
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from report import Result, common_arguments

from raygate.authn.jwt import ServiceAccountTokenAuthenticator
from raygate.store.tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER, SigningKey, issue_token

VERIFICATIONS, SMOKE_VERIFICATIONS = 5000, 50
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


def _measure(check: Callable[[], object], verifications: int) -> float:
    start = time.perf_counter()
    for _ in range(verifications):
        check()
    return (time.perf_counter() - start) / verifications


async def _run(verifications: int) -> list[dict[str, object]]:
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

        seconds = _measure(check, verifications)
        loop_results.append(
            {
                "token": label,
                "us_per_verification": round(seconds * 1e6, 2),
                "verifications_per_second": int(1 / seconds),
            }
        )
    return loop_results


def main() -> None:
    args = common_arguments(__doc__).parse_args()
    verifications = SMOKE_VERIFICATIONS if args.smoke else VERIFICATIONS
    result = Result(
        "tokens",
        "Service-account token verification",
        about=(
            "ServiceAccountTokenAuthenticator.authenticate_token, one thread, RS256 2048-bit; "
            f"first sight of each token unless noted; {verifications:,} verifications each."
        ),
        smoke=args.smoke,
    )
    rows = asyncio.run(_run(verifications))
    table = result.table("Verifications", ["token", "µs per verification", "per second"])
    for row in rows:
        table.add(str(row["token"]), row["us_per_verification"], row["verifications_per_second"])
    result.data = {"verifications_per_measurement": verifications, "results": rows}
    result.write(args.results_dir)


if __name__ == "__main__":
    main()

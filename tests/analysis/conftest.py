"""Synthetic results tables for the analysis tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from annealscale.analysis.laws import effective_data_law, power_law_d

# Two sources whose curves cross: A leads at small D, B at large D.
# At 1e6 tokens A = 1.30, B = 1.60; at 1e8 tokens A = 1.119, B = 0.88.
TRUE_PARAMS = {
    "A": {"E": 1.0, "B": 0.3, "beta": 0.2},
    "B": {"E": 0.8, "B": 0.8, "beta": 0.5},
}
TRAIN_TOKENS = (1e6, 3e6, 1e7, 3e7, 1e8)
SPENDS = {"A": (100.0, 400.0), "B": (50.0, 200.0)}
SPEND_GAIN = 0.005  # the larger spend lowers bpb by 0.5 %: small against the source gap
USD_PER_TOKEN = 1e-6
BASE_DOMAIN_BPB = 1.9


def make_results(seeds: int = 2, noise: float = 0.002, rng_seed: int = 0) -> pd.DataFrame:
    """One finished row per (source, spend, D, seed), plus failed and NaN rows."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for source, params in TRUE_PARAMS.items():
        for k, spend in enumerate(SPENDS[source]):
            for d in TRAIN_TOKENS:
                for seed in range(seeds):
                    bpb = float(power_law_d(d, **params)) * (1 - SPEND_GAIN * k)
                    bpb *= 1 + noise * rng.standard_normal()
                    rows.append(_row(source, spend, d, seed, "finished", bpb))
    # Failed rows carry values that would wreck the fits if they were used.
    rows.append(_row("A", 100.0, 1e8, 7, "failed", 0.2))
    rows.append(_row("B", 50.0, 1e6, 7, "failed", float("nan")))
    rows.append(_row("B", 200.0, 1e8, 8, "finished", float("nan")))
    return pd.DataFrame(rows)


def _row(source: str, spend: float, d: float, seed: int, status: str, bpb: float) -> dict:
    train_cost = d * USD_PER_TOKEN
    return {
        "source": source,
        "curation_spend": spend,
        "unique_tokens": int(spend * 1e5),
        "train_tokens": int(d),
        "seed": seed,
        "status": status,
        "domain_bpb": bpb,
        "general_bpb": 1.0 + 0.01 * np.log10(d),
        "curation_cost": spend,
        "train_flops": 6 * 1e8 * d,
        "train_cost": train_cost,
        "total_cost": spend + train_cost,
        "base_domain_bpb": BASE_DOMAIN_BPB,
        "config_hash": f"{source}-{spend}-{d}-{seed}",
    }


@pytest.fixture
def results() -> pd.DataFrame:
    """The default synthetic table: 40 finished rows, 3 excluded ones."""
    return make_results()


@pytest.fixture(name="make_results", scope="session")
def make_results_fixture() -> Callable[..., pd.DataFrame]:
    """`make_results` itself, for tests that vary the table (no imports from conftest)."""
    return make_results


def simulate_table(
    sources: dict[str, dict],
    *,
    spends: tuple[float, ...] = (100.0, 400.0),
    train_tokens: tuple[float, ...] = TRAIN_TOKENS,
    seeds: int = 2,
    noise: float = 0.005,
    rng_seed: int = 0,
    domain_fraction: float = 0.5,
    usd_per_train_token: float = USD_PER_TOKEN,
    train_fixed_usd: float = 2.0,
) -> pd.DataFrame:
    """A full results table from known curves.

    ``sources[name]`` holds ``params`` and optionally ``law`` (``"power_law_D"``, the
    default, or ``"effective_data"``) and ``tokens_per_usd`` (pool tokens bought per USD
    of curation, 1e5 by default). Noise is multiplicative, log-normal with sd ``noise``.
    """
    rng = np.random.default_rng(rng_seed)
    rows = []
    for name, spec in sources.items():
        law = spec.get("law", "power_law_D")
        for spend in spends:
            pool = spec.get("tokens_per_usd", 1e5) * spend
            for d in train_tokens:
                dom = domain_fraction * d
                if law == "power_law_D":
                    truth = float(power_law_d(d, **spec["params"]))
                else:
                    truth = float(effective_data_law(dom, pool, **spec["params"]))
                for seed in range(seeds):
                    train_cost = train_fixed_usd + usd_per_train_token * d
                    rows.append(
                        {
                            "source": name,
                            "curation_spend": spend,
                            "unique_tokens": pool,
                            "train_tokens": d,
                            "domain_tokens": dom,
                            "repetition": dom / pool,
                            "seed": seed,
                            "status": "finished",
                            "domain_bpb": truth * float(np.exp(noise * rng.standard_normal())),
                            "general_bpb": 1.0 + 0.01 * np.log10(d),
                            "curation_cost": spend,
                            "train_flops": 6e8 * d,
                            "train_cost": train_cost,
                            "total_cost": spend + train_cost,
                            "base_domain_bpb": BASE_DOMAIN_BPB,
                        }
                    )
    return pd.DataFrame(rows)


@pytest.fixture(name="simulate_table", scope="session")
def simulate_table_fixture() -> Callable[..., pd.DataFrame]:
    """`simulate_table` itself."""
    return simulate_table

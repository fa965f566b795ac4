"""Cells and their identities: one cell per (source, spend, tokens, seed); the identity
changes exactly when something that changes the result changes."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

from annealscale.tune.cells import expand_grid
from annealscale.tune.spec import ExperimentSpec, parse_spec

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"


@pytest.fixture
def spec() -> ExperimentSpec:
    data = yaml.safe_load(DEMO.read_text())
    data["grid"]["seeds"] = [0, 1]
    data["sources"][2]["curation_spend"] = [0.05, 0.1]  # a source with its own spends
    return parse_spec(data)


def _ids(spec: ExperimentSpec) -> list[str]:
    return [c.identity for c in expand_grid(spec)]


def _ids_by_source(spec: ExperimentSpec) -> dict[int, list[str]]:
    cells = expand_grid(spec)
    names = [s.name for s in spec.sources]
    return {i: [c.identity for c in cells if c.source == name] for i, name in enumerate(names)}


def _replace_source(spec: ExperimentSpec, index: int, **changes) -> ExperimentSpec:
    sources = list(spec.sources)
    sources[index] = sources[index].replace(**changes)
    return spec.replace(sources=tuple(sources))


def test_one_cell_per_source_spend_tokens_seed_in_stable_order(spec):
    cells = expand_grid(spec)

    expected = [
        (source.name, spend, tokens, seed)
        for source in spec.sources
        for spend, tokens, seed in itertools.product(
            spec.spends_for(source), spec.grid.train_tokens, spec.grid.seeds
        )
    ]
    assert [(c.source, c.curation_spend, c.train_tokens, c.seed) for c in cells] == expected
    n_tokens, n_seeds = len(spec.grid.train_tokens), len(spec.grid.seeds)
    assert len(cells) == (2 * 3 + 1 * 2) * n_tokens * n_seeds  # two sources on the grid's 3 spends
    assert all(
        c.source_identity == s.identity for s in spec.sources for c in cells if c.source == s.name
    )


def test_identities_are_unique_and_stable(spec):
    ids = _ids(spec)
    assert len(set(ids)) == len(ids)
    assert ids == _ids(spec)
    assert all(len(i) == 12 and int(i, 16) >= 0 for i in ids)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda s: s.replace(name="another-name"), id="experiment-name"),
        pytest.param(
            lambda s: s.replace(
                resources=s.resources.replace(
                    num_workers=s.train.batch_size // s.train.micro_batch_size,
                    cpus_per_worker=4,
                    max_concurrent_trials=3,  # GPUs: see test_identity_contract (precision)
                ),
            ),
            id="resources",
        ),
        pytest.param(lambda s: s.replace(storage_path="/mnt/shared/x"), id="storage"),
        pytest.param(lambda s: _replace_source(s, 0, name="licensed-books"), id="source-name"),
    ],
)
def test_identity_ignores_where_and_what_it_is_called(spec, change):
    assert _ids(change(spec)) == _ids(spec)


def test_identity_ignores_source_order_and_other_cells(spec):
    reordered = spec.replace(sources=spec.sources[::-1])
    assert set(_ids(reordered)) == set(_ids(spec))

    more_tokens = spec.replace(
        grid=spec.grid.replace(
            train_tokens=(*spec.grid.train_tokens, 4 * spec.grid.train_tokens[-1])
        ),
    )
    assert set(_ids(spec)) < set(_ids(more_tokens))

    one_source = spec.replace(sources=spec.sources[:1])
    assert set(_ids(one_source)) == set(_ids_by_source(spec)[0])


def test_source_param_changes_only_that_sources_cells(spec):
    params = spec.sources[0].params
    changed = _replace_source(
        spec, 0, params=params.replace(usd_per_token=2 * params.usd_per_token)
    )
    before, after = _ids_by_source(spec), _ids_by_source(changed)
    assert set(after[0]).isdisjoint(before[0])
    assert after[1] == before[1]
    assert after[2] == before[2]


def test_source_params_given_as_mapping_or_params_hash_alike(spec):
    source = spec.sources[1]
    as_mapping = source.replace(params=source.params.model_dump())
    assert as_mapping.identity == source.identity
    assert source.replace(name="other").identity == source.identity
    threshold = source.params.replace(threshold=0.7)
    assert source.replace(params=threshold).identity != source.identity


def test_train_tokens_value_changes_only_its_cells(spec):
    tokens = list(spec.grid.train_tokens)
    old = tokens[1]
    tokens[1] = old + spec.train.tokens_per_step
    changed = spec.replace(grid=spec.grid.replace(train_tokens=tuple(tokens)))
    before = {
        (c.source, c.curation_spend, c.train_tokens, c.seed): c.identity for c in expand_grid(spec)
    }
    after = {
        (c.source, c.curation_spend, c.train_tokens, c.seed): c.identity
        for c in expand_grid(changed)
    }
    for (source, spend, t, seed), identity in after.items():
        if t == tokens[1]:
            assert identity not in before.values()
        else:
            assert before[(source, spend, t, seed)] == identity


def test_seed_changes_identity(spec):
    cells = expand_grid(spec)
    by_seed = {}
    for c in cells:
        by_seed.setdefault((c.source, c.curation_spend, c.train_tokens), set()).add(c.identity)
    assert all(len(ids) == len(spec.grid.seeds) for ids in by_seed.values())

    reseeded = spec.replace(grid=spec.grid.replace(seeds=(0, 7)))
    seed0 = [c.identity for c in cells if c.seed == 0]
    assert [c.identity for c in expand_grid(reseeded) if c.seed == 0] == seed0
    assert set(c.identity for c in expand_grid(reseeded) if c.seed == 7).isdisjoint(_ids(spec))


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda s: s.replace(schedule=s.schedule.replace(peak_lr=s.schedule.peak_lr / 2)),
            id="peak_lr",
        ),
        pytest.param(
            lambda s: s.replace(domain_fraction=s.domain_fraction / 2),
            id="domain_fraction",
        ),
        pytest.param(
            lambda s: s.replace(base_model=s.base_model.replace(path="/models/other")),
            id="base_model",
        ),
        pytest.param(
            lambda s: s.replace(train=s.train.replace(weight_decay=s.train.weight_decay + 0.1)),
            id="weight_decay",
        ),
        pytest.param(
            lambda s: s.replace(eval=s.eval.replace(max_tokens=2 * s.eval.max_tokens)),
            id="eval",
        ),
    ],
)
def test_shared_settings_change_every_identity(spec, change):
    assert set(_ids(change(spec))).isdisjoint(_ids(spec))


def test_prices_do_not_change_identity(spec):
    """Costs are recomputed from stored FLOPs, so repricing compute reruns nothing."""
    repriced = spec.replace(prices=spec.prices.replace(usd_per_pflop=3 * spec.prices.usd_per_pflop))
    assert _ids(repriced) == _ids(spec)


def test_budgets_of_the_same_whole_steps_are_the_same_anneal(spec):
    per_step = spec.train.tokens_per_step
    tokens = list(spec.grid.train_tokens)
    tokens[0] += per_step - 1  # still the same number of optimizer steps
    same = spec.replace(grid=spec.grid.replace(train_tokens=tuple(tokens)))
    assert _ids(same) == _ids(spec)


def test_resolved_inputs_change_the_identities_they_feed(spec):
    """A rebuilt base model or replaced data file must never reuse stale results."""
    assert set(_ids_with(spec, shared="model-v2")).isdisjoint(_ids(spec))
    name = spec.sources[0].name
    moved = {c.identity for c in expand_grid(spec, "", {name: "new-files"}) if c.source == name}
    kept = {c.identity for c in expand_grid(spec, "", {name: "new-files"}) if c.source != name}
    assert moved.isdisjoint(_ids(spec))
    assert kept <= set(_ids(spec))


def _ids_with(spec, *, shared: str) -> list[str]:
    return [c.identity for c in expand_grid(spec, shared)]

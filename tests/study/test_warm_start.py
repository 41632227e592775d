"""Warm start at creation: sources read once (in this storage or another), checked by the
pre-flight, their configurations mapped and enqueued after the baselines, their finished
trials stored for every worker's sampler."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from sweeper.attributes import WARM_START_SOURCE_ATTR, WARM_START_TRIALS_ATTR
from sweeper.launch.cli import main
from sweeper.runtime.storage import open_storage
from sweeper.settings.samplers import SourceAwareTPESampler
from sweeper.settings.study_file import load_study_config
from sweeper.study.confirm import space_distributions
from sweeper.study.sweep import create_study, open_study

SPACE = {
    "learning_rate": {"low": 1e-4, "high": 5e-3, "log": True},
    "per_device_train_batch_size": {"choices": [16, 32]},
    "num_train_epochs": {"low": 1, "high": 2},
    "seed": {"choices": [42, 7]},
}


def _source(
    write_study: Callable[..., Path],
    name: str,
    values: list[float],
    storage: str | None = None,
    states: list[TrialState] | None = None,
    **sections: Any,
) -> tuple[Path, str]:
    """A sweeper study (created as `sweeper create` does) holding finished trials with
    these values: learning rates 1e-4, 2e-4, ... (so trial i has learning rate (i+1)e-4)."""
    path = write_study(name, **({"storage": storage} if storage else {}), **sections)
    config = load_study_config(path, {}, notify=lambda line: None)
    study = create_study(config).study
    distributions = space_distributions(config.space)
    for index, value in enumerate(values):
        state = (states or [TrialState.COMPLETE] * len(values))[index]
        params = {"learning_rate": (index + 1) * 1e-4, "per_device_train_batch_size": 32}
        params |= {"num_train_epochs": 1 + index % 2, "seed": 42 if index % 2 else 7}
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=distributions,
                state=state,
                value=value if state == TrialState.COMPLETE else None,
                intermediate_values={3: value} if state == TrialState.PRUNED else None,
            )
        )
    return path, config.storage_url


def _warm_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if WARM_START_SOURCE_ATTR in t.user_attrs]


@pytest.mark.parametrize("source_backend", ["sqlite", "postgresql"])
def test_warm_start_from_another_storage_enqueues_after_the_baselines(
    write_study: Callable[..., Path],
    postgres_url: str,
    tmp_path: Path,
    source_backend: str,
    study_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # One study on SQLite warm-starts one on PostgreSQL, and the other way round.
    sqlite_url = f"sqlite:///{tmp_path / 'other.db'}"
    source_url, target_url = (
        (sqlite_url, postgres_url) if source_backend == "sqlite" else (postgres_url, sqlite_url)
    )
    source_name = f"{study_name}-src"
    _source(write_study, source_name, [0.6, 0.3, 0.5, 0.2, 0.7], storage=source_url)
    target = write_study(
        f"{study_name}-new",
        storage=target_url,
        baselines=[{"name": "card", "params": {"learning_rate": 1e-3, "seed": 42}}],
        warm_start={"sources": [f"{source_name}@{source_url}"], "top": 3},
    )
    assert main(["create", str(target)]) == 0
    out = capsys.readouterr().out
    study = optuna.load_study(study_name=f"{study_name}-new", storage=target_url)
    trials = study.get_trials(deepcopy=False)
    assert trials[0].user_attrs["baseline"] == "card"  # the baselines first
    warm = _warm_trials(study)
    assert [t.user_attrs[WARM_START_SOURCE_ATTR] for t in warm] == [
        f"{source_name} #3",
        f"{source_name} #1",
        f"{source_name} #2",
    ]
    assert all(t.state == TrialState.WAITING for t in warm)
    assert "1 baseline trial(s), 3 warm-start trial(s), 4 trial(s) in all" in out
    assert f"warm start: enqueued {source_name} #3: lr 0.0004" in out
    # Every finished trial is stored for the sampler, with no storage URL and no secret.
    observations = study.user_attrs[WARM_START_TRIALS_ATTR]
    assert sorted(row["trial"] for row in observations) == [0, 1, 2, 3, 4]
    assert "sweeper:sweeper@" not in str(study.user_attrs)
    assert "sweeper:sweeper@" not in out
    assert type(study.sampler) is not SourceAwareTPESampler  # a plain load: no sweeper sampler
    # Again, with the password in the study file's source URL: the same study, and no
    # password in what is compared or said.
    assert main(["create", str(target)]) == 0
    assert "sweeper:sweeper@" not in capsys.readouterr().out
    reopened, _ = open_study(
        load_study_config(target, {}, notify=lambda line: None),
        open_storage(target_url, heartbeat=False),
    )
    assert isinstance(reopened.sampler, SourceAwareTPESampler)


def test_two_sources_take_turns_and_a_moved_space_says_each_mapping(
    write_study: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _source(write_study, "first", [0.5, 0.1, 0.3])
    _source(write_study, "second", [0.2, 0.4])
    target = write_study(
        "moved",
        search_space={
            **SPACE,
            # Moved: the learning rates above 2e-4 are clipped; batch 32 is no choice now;
            # epochs are fixed at 2; weight decay is searched, which the sources fixed.
            "learning_rate": {"low": 1e-5, "high": 2e-4, "log": True},
            "per_device_train_batch_size": {"choices": [8, 16]},
            "num_train_epochs": 2,
            "weight_decay": {"low": 0.0, "high": 0.1},
        },
        warm_start={"sources": ["first", "second"], "top": 3},
    )
    # `check` says what creating the study would enqueue, and writes nothing.
    assert main(["check", str(target)]) == 0
    assert "warm start (when created): enqueued first #1: lr 0.0002" in capsys.readouterr().out
    assert not Path(_url(target).removeprefix("sqlite:///")).exists()
    assert main(["create", str(target)]) == 0
    out = capsys.readouterr().out
    study = optuna.load_study(study_name="moved", storage=_url(target))
    warm = _warm_trials(study)
    # first's best, second's best; first's second best and second's second map onto first's
    # best once clipped (the seed aside), and are passed over.
    assert [t.user_attrs[WARM_START_SOURCE_ATTR] for t in warm] == ["first #1", "second #0"]
    assert "maps onto the configuration of first #1 (enqueued): passed over" in out
    params = [t.system_attrs["fixed_params"] for t in warm]
    assert params[0] == {"learning_rate": pytest.approx(2e-4), "seed": 42}
    assert params[1] == {"learning_rate": pytest.approx(1e-4), "seed": 7}
    for line in (
        "learning_rate=0.0003 lies outside [1e-05, 0.0002]: clipped to 0.0002",
        "per_device_train_batch_size=32 is not among the choices [8, 16]: sampled",
        "num_train_epochs=1: not searched here (fixed at 2): dropped",
        "weight_decay: not searched by the source (fixed at 0 there): sampled",
    ):
        assert line in out
    record = study.user_attrs["warm_start"]
    assert [source["study"] for source in record["sources"]] == ["first", "second"]
    assert any("clipped to 0.0002" in note for note in record["notes"])
    # Batch 32 is no choice here: the sources' trials have no batch size in this space, and
    # TPE's joint model would leave them out after counting them: they are not modelled.
    assert (
        "source first: 3 finished trial(s) have no value in this space for "
        "per_device_train_batch_size: the sampler leaves them out"
    ) in out
    assert study.user_attrs[WARM_START_TRIALS_ATTR] == []


def _url(study_file: Path) -> str:
    config = load_study_config(study_file, {}, notify=lambda line: None)
    return config.storage_url


def test_a_source_with_pruned_and_failed_trials_only_enqueues_nothing_and_says_so(
    write_study: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    states = [TrialState.PRUNED, TrialState.FAIL, TrialState.PRUNED]
    _source(write_study, "stopped", [0.6, 0.5, 0.4], states=states)
    target = write_study("after-stopped", warm_start={"sources": ["stopped"]})
    assert main(["create", str(target)]) == 0
    out = capsys.readouterr().out
    assert (
        "source stopped has no complete trial: nothing enqueued from it (its 2 pruned trials "
        "inform the sampler)" in out
    )
    study = optuna.load_study(study_name="after-stopped", storage=_url(target))
    assert _warm_trials(study) == []
    assert [row["state"] for row in study.user_attrs[WARM_START_TRIALS_ATTR]] == ["PRUNED"] * 2


def test_the_pre_flight_refuses_sources_it_cannot_use_and_writes_nothing(
    write_study: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _source(write_study, "by-accuracy", [0.8], objective={"metric": "accuracy"})
    # A plain Optuna study with no sweeper config: only its direction can be compared.
    foreign_url = f"sqlite:///{tmp_path / 'foreign.db'}"
    optuna.create_study(study_name="foreign", storage=foreign_url, direction="maximize")
    target = write_study(
        "refused",
        warm_start={
            "sources": ["missing", "by-accuracy", f"foreign@{foreign_url}", "refused"],
        },
    )
    assert main(["create", str(target)]) == 2
    err = capsys.readouterr().err
    lines = [line.strip() for line in err.splitlines()]
    assert any(
        line.startswith("warm_start.sources: no study named 'missing' in sqlite:///")
        and "(it holds no study)" in line
        for line in lines
    ), err
    assert (
        "warm_start.sources: 'by-accuracy' optimized accuracy, this study "
        "objective.metric='validation_loss'; warm start from a study of the same metric"
    ) in lines
    assert any(
        line.startswith("warm_start.sources: 'foreign@sqlite:///")
        and "is to maximize its objective, this study to minimize" in line
        for line in lines
    ), err
    assert "warm_start.sources: 'refused' is this study itself; name an earlier study" in lines
    assert "nothing was written" in err
    assert not Path(_url(target).removeprefix("sqlite:///")).exists()


def test_a_worker_from_an_empty_directory_samples_with_the_stored_prior(
    write_study: Callable[..., Path], tmp_path: Path
) -> None:
    _, source_url = _source(write_study, "earlier", [0.5, 0.2, 0.4, 0.3])
    target = write_study("later", warm_start={"sources": ["earlier"], "top": 1})
    creator = create_study(load_study_config(target, {}, notify=lambda line: None))
    assert isinstance(creator.study.sampler, SourceAwareTPESampler)
    # The source is gone: a joining worker must not need it.
    shutil.rmtree(Path(source_url.removeprefix("sqlite:///")).parent)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    target_url = _url(target)
    assert main(["check", "later", "--storage", target_url, "--studies-dir", str(empty)]) == 0
    config = load_study_config(target, {}, notify=lambda line: None)
    joined, created = open_study(config, open_storage(target_url, heartbeat=False))
    assert not created and isinstance(joined.sampler, SourceAwareTPESampler)

    def observed(sampler: Any) -> list[tuple[Any, ...]]:
        return [(t.number, t.state, t.value, t.params) for t in sampler._source_trials]

    assert observed(joined.sampler) == observed(creator.study.sampler)
    assert len(observed(joined.sampler)) == 4


def test_warm_start_is_a_study_key_once_the_study_exists(
    write_study: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _source(write_study, "one", [0.3])
    _source(write_study, "two", [0.3])
    target = write_study("keyed")
    assert main(["create", str(target), "--warm-start", "one"]) == 0
    assert main(["create", str(target), "--warm-start", "one"]) == 0  # the same: fine
    capsys.readouterr()
    assert main(["create", str(target), "--warm-start", "two"]) == 2
    err = capsys.readouterr().err
    assert "warm_start.sources: the study has [{'study': 'one', 'storage': None}]" in err

"""Executors by name: the ``EXECUTORS`` registry, each entry built from one ``PoolConfig``, the
CLI flags that make that config, and a registered executor that the server then runs on."""

from __future__ import annotations

import subprocess
import sys
import types
from dataclasses import replace

import pytest

from winnow.search_space.registry import UnknownNameError
from winnow.service.api.server import ServerConfig
from winnow.service.cli.main import build_parser
from winnow.service.cli.service import _pool_config
from winnow.service.client import Client
from winnow.workers import local
from winnow.workers.executor import InProcessExecutor
from winnow.workers.pools import DEFAULT_TRIAL_TIMEOUT, EXECUTORS, PoolConfig, make_pool


class Recorder:
    """Stands in for an executor class: records what it was built with."""

    built: list[dict] = []

    def __init__(self, **kwargs) -> None:
        Recorder.built.append(kwargs)


def test_the_registry_names_local_ray_and_inprocess_and_lists_them_for_unknown_names():
    assert EXECUTORS.names() == ["local", "ray", "inprocess"]
    assert type(make_pool(PoolConfig())) is InProcessExecutor
    with pytest.raises(UnknownNameError, match="unknown executor 'slurm'; allowed: local, ray"):
        make_pool(PoolConfig("slurm"))


def test_each_executor_takes_its_fields_of_the_pool_config(monkeypatch):
    monkeypatch.setattr(local, "LocalExecutor", Recorder)
    fake_ray = types.ModuleType("winnow.workers.ray_executor")
    fake_ray.RayExecutor = Recorder
    monkeypatch.setitem(sys.modules, "winnow.workers.ray_executor", fake_ray)  # Ray not imported
    Recorder.built.clear()
    config = PoolConfig(workers=3, timeout=9.0, ray_address="auto", max_retries=1)
    make_pool(replace(config, executor="local"))
    make_pool(replace(config, executor="ray"))
    assert Recorder.built == [
        {"workers": 3, "timeout": 9.0, "max_retries": 1},
        {"address": "auto", "num_cpus": 3, "timeout": 9.0, "max_retries": 1},
    ]


def test_choosing_an_executor_imports_no_other():
    probe = (
        "import sys; from winnow.workers.pools import PoolConfig, make_pool; "
        "make_pool(PoolConfig('inprocess')); print('ray' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["serve"], PoolConfig("local")),
        (
            ["serve", "--executor", "ray", "--workers", "4", "--ray-address", "auto"],
            PoolConfig("ray", workers=4, ray_address="auto"),
        ),
        (
            ["serve", "--executor", "inprocess", "--trial-timeout", "30"],
            PoolConfig("inprocess", timeout=30.0),
        ),
        (["demo", "--workers", "2"], PoolConfig("local", workers=2)),
        (["serve", "--trial-timeout", "0"], PoolConfig("local", timeout=None)),
    ],
)
def test_the_cli_flags_build_the_pool_config(argv, expected):
    assert _pool_config(build_parser().parse_args(argv)) == expected


def test_a_trial_timeout_is_on_by_default_and_reaches_the_local_pool(monkeypatch):
    monkeypatch.setattr(local, "LocalExecutor", Recorder)
    Recorder.built.clear()
    assert PoolConfig().timeout == DEFAULT_TRIAL_TIMEOUT == 6 * 3600
    make_pool(_pool_config(build_parser().parse_args(["serve"])))
    assert Recorder.built == [{"workers": None, "timeout": 6 * 3600.0, "max_retries": 2}]
    with pytest.raises(ValueError, match="> 0 seconds or None"):
        PoolConfig(timeout=0)


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["serve", "--max-concurrent-searches", "0"], "--max-concurrent-searches"),
        (["serve", "--max-queued-searches", "0"], "--max-queued-searches"),
        (["serve", "--trial-timeout", "-1"], "--trial-timeout"),
        (["serve", "--trial-timeout", "inf"], "--trial-timeout"),
    ],
)
def test_serve_refuses_limits_that_would_run_nothing_or_never_stop(argv, option, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2 and option in capsys.readouterr().err


def test_serve_help_says_the_trial_timeout_default_and_how_to_turn_it_off(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "0: no limit (default: 21600.0)" in help_text


def test_the_server_config_refuses_no_concurrent_searches():
    with pytest.raises(ValueError, match="max_concurrent_searches must be at least 1, not 0"):
        ServerConfig("sqlite://", max_concurrent_searches=0)


def test_the_server_config_refuses_a_queue_that_takes_no_search():
    with pytest.raises(ValueError, match="max_queued_searches must be at least 1, not 0"):
        ServerConfig("sqlite://", max_queued_searches=0)


def test_the_server_runs_its_searches_on_a_registered_executor(make_server, tiny_spec):
    configs, executors = [], []

    def counting(config: PoolConfig) -> InProcessExecutor:
        configs.append(config)
        executors.append(
            InProcessExecutor(lambda spec, on_epoch: ran.append(spec) or inner.run(spec, on_epoch))
        )
        return executors[-1]

    ran, inner = [], InProcessExecutor()
    with EXECUTORS.registered("counting", counting):
        server = make_server(pool=PoolConfig("counting", workers=5))
    assert configs == [PoolConfig("counting", workers=5)] and server.pool is executors[0]
    with Client(server.address) as client:
        info = client.submit(tiny_spec()).wait(timeout=120)
    assert info["status"] == "finished" and len(ran) == info["progress"]["trained"] == 3

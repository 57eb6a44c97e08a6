"""The private TorchDistributor API the launcher relies on is still there, with the parameters it passes.

``spark_jobs.launch`` calls TorchDistributor's private methods (the only way to keep its Spark
side while replacing the torchrun process chain). A pyspark upgrade that renames or reshapes one of
them must fail here, naming the installed version, rather than mid-launch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pyspark
import pytest
from pyspark import SparkContext
from pyspark.ml.torch.distributor import TorchDistributor

# method -> the parameters the launcher passes, in order (by position, then by keyword).
USED_METHODS: dict[str, tuple[list[str], list[str]]] = {
    # torchrun.start: distributor._run(train_object, starter)
    "_run": (["train_object", "run_pytorch_file_fn"], []),
    # TorchrunStarter: TorchDistributor._get_torchrun_args(local_mode, num_processes)
    "_get_torchrun_args": (["local_mode", "num_processes"], []),
    # TorchrunStarter: TorchDistributor._execute_command(command, log_streaming_client=...)
    "_execute_command": (["cmd"], ["log_streaming_client"]),
    # TorchrunStarter on the plain path: (input_params, train_path, *rank args)
    "_run_training_on_pytorch_file": (["input_params", "train_path"], []),
}
# Keys of ``input_params`` (TorchDistributor's private per-launch dict) that the starter reads.
USED_INPUT_PARAMS = ("local_mode", "num_processes")


def _where() -> str:
    return f"installed pyspark {pyspark.__version__}"


def _bound_parameters(method: Callable[..., Any]) -> list[str]:
    params = list(inspect.signature(method).parameters.values())
    return [p.name for p in params if p.name != "self"]


@pytest.mark.parametrize("name", sorted(USED_METHODS))
def test_private_method_keeps_its_parameters(name: str) -> None:
    method = getattr(TorchDistributor, name, None)
    assert method is not None, (
        f"{_where()}: TorchDistributor.{name} is gone; spark_jobs.launch.torchrun uses it"
    )
    positional, keywords = USED_METHODS[name]
    names = _bound_parameters(method)
    assert names[: len(positional)] == positional, (
        f"{_where()}: TorchDistributor.{name}{inspect.signature(method)} no longer starts with "
        f"{positional}, which spark_jobs.launch passes"
    )
    for keyword in keywords:
        assert keyword in names, f"{_where()}: TorchDistributor.{name} lost its {keyword!r} parameter"
    params = inspect.signature(method).parameters.values()
    if name in ("_run", "_run_training_on_pytorch_file"):
        # Rank arguments travel as extra positional arguments.
        assert any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params), (
            f"{_where()}: TorchDistributor.{name} no longer takes *args"
        )


def test_active_spark_context_attribute_exists() -> None:
    assert hasattr(SparkContext, "_active_spark_context"), (
        f"{_where()}: SparkContext._active_spark_context is gone; spark_jobs.launch.driver reads it"
    )


def test_input_params_carry_what_the_starter_reads(spark: Any) -> None:
    distributor = TorchDistributor(num_processes=2, local_mode=True, use_gpu=False)
    missing = [key for key in USED_INPUT_PARAMS if key not in distributor.input_params]
    assert not missing, f"{_where()}: TorchDistributor.input_params lacks {missing}"
    assert distributor.input_params["num_processes"] == 2 and distributor.input_params["local_mode"] is True

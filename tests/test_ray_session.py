"""The Ray task runner shuts down only a Ray session that it started: a caller that ran
`ray.init()` before the flow still has its session, on the same cluster, after the flow."""

from __future__ import annotations

import pytest
from conftest import eval_config

from plantcad_flows.config import EvalConfig

pytestmark = pytest.mark.slow


def test_callers_ray_session_survives_the_flow(prefect_server, small_models, synthetic_dir, tmp_path):
    import ray

    from flows.zero_shot_eval import zero_shot_eval

    assert not ray.is_initialized()
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace="caller")
    try:
        gcs = ray.get_runtime_context().gcs_address

        @ray.remote
        def square(x: int) -> int:
            return x * x

        assert ray.get(square.remote(3)) == 9
        cfg = eval_config(
            small_models, synthetic_dir, tmp_path / "out", tasks=(("tis_recovery", "test_maize"),), ray=True
        )
        cfg["models"] = cfg["models"][:1]
        state = zero_shot_eval(EvalConfig.model_validate(cfg), return_state=True)
        assert state.is_completed(), state.message
        [row] = state.result()
        assert row["status"] == "completed" and row["metrics"]["num_examples"] == 16

        # the flow scored on the caller's session and left it as it found it
        assert ray.is_initialized()
        assert ray.get_runtime_context().gcs_address == gcs
        assert ray.get(square.remote(4)) == 16
    finally:
        ray.shutdown()

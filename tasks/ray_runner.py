"""The prefect-ray task runner that scores shards on a Ray cluster.

It adds these to prefect-ray's `RayTaskRunner`:
* joining goes through `plantcad_flows.cluster.ray_client.connect`, which never falls back to a
  silent local instance and checks that the cluster joined is the one asked for;
* the Prefect API URL the flow really uses is pinned in the settings each submission carries and
  in the workers' environment, so task runs on Ray workers report to the flow's server (a worker
  that found no API would start an ephemeral server of its own on a shared SQLite file);
* the driver's `PLANTCAD_TASK_RETRY_WAITS` reaches the workers, where a shard runs and retries;
* a worker sends its task run's last state and logs to the API before it hands back the result:
  when the flow ends, Ray ends the job's workers, and a state still queued in a worker was lost
  (the UI then showed a finished shard as running forever);
* a flow torn down by an exception cancels its unfinished shards on the cluster, so no thread
  waits forever on a session about to close;
* on exit it shuts down only a Ray session that it started itself: a caller that ran
  `ray.init()` before the flow keeps its session.
"""

from __future__ import annotations

import os
from typing import Any

from prefect.context import FlowRunContext
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import TaskRunner
from prefect_ray import RayTaskRunner

from plantcad_flows.cluster import ray_client
from plantcad_flows.config import RayConfig
from plantcad_flows.io.retry import TASK_RETRY_WAITS_ENV

# How long a worker waits for its queued events and logs to reach the API after a task run.
REPORT_FLUSH_TIMEOUT_S = 10.0


class PlantcadRayTaskRunner(RayTaskRunner):
    """RayTaskRunner that never falls back to a local instance and pins the Prefect API URL."""

    def __init__(self, ray_config: RayConfig, num_cpus: float | None = None):
        self.ray_config = ray_config
        self.num_cpus = num_cpus
        self.api_url: str | None = None
        self._submitted: list[Any] = []  # the Ray object refs of this run's task runs
        super().__init__(address=ray_config.address, init_kwargs={"num_cpus": num_cpus} if num_cpus else None)

    def duplicate(self) -> PlantcadRayTaskRunner:
        return type(self)(self.ray_config, self.num_cpus)

    def __enter__(self) -> PlantcadRayTaskRunner:
        TaskRunner.__enter__(self)
        self._owns_ray = False
        if ray_client.in_ray_worker():
            # hydrated_context enters a copy of the flow's runner inside each worker.
            return self
        self.api_url = effective_api_url()
        # a step retries where it runs: the workers wait as the driver was told to
        waits = os.environ.get(TASK_RETRY_WAITS_ENV)
        shared = {TASK_RETRY_WAITS_ENV: waits} if waits else None
        env = ray_client.runtime_env(self.ray_config, self.api_url, shared)
        self._owns_ray = ray_client.connect(self.ray_config.address, num_cpus=self.num_cpus, runtime_env=env)
        try:
            ray_client.check_api_reachable(self.api_url, self.ray_config.address)
        except Exception:
            self._shutdown_if_owned()
            raise
        res = ray_client.connected_resources()
        self.logger.info(
            f"Ray cluster {self.ray_config.address or 'local'}: {res.num_nodes} node(s), "
            f"{res.num_gpus:g} GPU(s), {res.num_cpus:g} CPU(s); task runs report to {self.api_url}"
        )
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if exc_info[0] is not None and not ray_client.in_ray_worker():
            # The flow is being torn down (interrupted, or it raised): its shards stop on the
            # cluster too, and every thread waiting on one is released (it sees a cancelled
            # task) instead of waiting forever on a session about to close.
            ray_client.cancel(self._submitted)
        self._submitted = []
        # prefect-ray's own exit would do the same check; it is stated here because a session the
        # caller opened must survive the flow whatever the base class does in a later version.
        self._shutdown_if_owned()
        TaskRunner.__exit__(self, *exc_info)

    def _shutdown_if_owned(self) -> None:
        if self._owns_ray and not ray_client.in_ray_worker():
            ray_client.shutdown()
        self._owns_ray = False

    @staticmethod
    def _run_prefect_task(*upstream_ray_obj_refs: Any, **kwargs: Any) -> Any:
        """prefect-ray's body of the Ray task, then a flush of what the task run reported."""
        try:
            return RayTaskRunner._run_prefect_task(*upstream_ray_obj_refs, **kwargs)
        finally:
            flush_reports()

    def submit(self, task, parameters, wait_for=None, dependencies=None):
        if self.api_url is None:
            self.api_url = effective_api_url()
        if self.api_url and PREFECT_API_URL.value() != self.api_url:
            # serialize_context ships the current settings; make them name the flow's API.
            with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
                future = super().submit(task, parameters, wait_for, dependencies)
        else:
            future = super().submit(task, parameters, wait_for, dependencies)
        self._submitted.append(future.wrapped_future)
        return future


def flush_reports(timeout: float = REPORT_FLUSH_TIMEOUT_S) -> None:
    """Send this process's queued Prefect events (task run states) and logs, waiting at most
    `timeout` s for each. The senders stop; the next task run in this worker starts new ones.

    Prefect's own process-pool runner also waits for its subprocesses' events before they return;
    prefect-ray 0.6 does not. A worker that cannot reach the API still returns its result after
    `timeout`.
    """
    for sender in (EventsWorker, APILogWorker):
        sender.drain_all(timeout=timeout, at_exit=False)


def effective_api_url() -> str | None:
    """The Prefect API this process talks to: the setting, else the flow's client, else the
    ephemeral server the engine started (it starts before the FlowRunContext exists)."""
    url = PREFECT_API_URL.value()
    if url:
        return url
    ctx = FlowRunContext.get()
    if ctx is not None and ctx.client is not None:
        return str(ctx.client.api_url).rstrip("/")
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    return server.api_url if server.running else None

"""datatrove's executors, one way for every stage that runs as tasks (`make data`, `make pack`): local processes, a Ray
cluster or Slurm job arrays, from the same YAML keys.

Local and Ray stages run one after the other from the driver, which checks that every task completed before the next
starts (datatrove's Ray executor would otherwise wait forever on a failed dependency). Slurm gets the chain as job
arrays linked by afterok dependencies. Completed tasks are skipped on a rerun (datatrove's completion markers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from llm_recipes.config import ConfigError

# what decides where and how fast the tasks run, never what they write (left out of the work folders' fingerprints)
EXECUTOR_KEYS = ("executor", "workers", "ray_address", "ray_cpus_per_task", "slurm_partition", "slurm_time",
                 "slurm_cpus_per_task", "slurm_mem_per_cpu_gb", "slurm_venv_path", "slurm_qos")


@dataclass
class ExecutorArguments:
    executor: str = field(
        default="local", metadata={"help": "local (datatrove LocalPipelineExecutor), ray or slurm.",
                                   "choices": ["local", "ray", "slurm"]})
    tasks: int = field(default=2, metadata={"help": "Shards of the data (datatrove tasks) for the per-document stages."})
    workers: int = field(default=-1, metadata={"help": "Tasks run at once (-1 = all tasks at once)."})
    ray_address: str | None = field(
        default=None,
        metadata={"help": "executor ray: the cluster to run on, as ray.init takes it: host:port of its head node (the "
                  "--port of `ray start --head`) or auto (RAY_ADDRESS, else the cluster `ray start` began on this "
                  "machine). None: a Ray of its own in this process, with `workers` CPUs."},
    )
    ray_cpus_per_task: int = field(default=1, metadata={"help": "executor ray: CPUs reserved per task."})
    slurm_partition: str | None = field(default=None, metadata={"help": "executor slurm: partition (required)."})
    slurm_time: str = field(default="04:00:00", metadata={"help": "executor slurm: time limit per job array task."})
    slurm_cpus_per_task: int = field(default=1, metadata={"help": "executor slurm: CPUs per task."})
    slurm_mem_per_cpu_gb: int = field(default=2, metadata={"help": "executor slurm: memory per CPU in GB."})
    slurm_venv_path: str | None = field(
        default=None, metadata={"help": "executor slurm: virtualenv activated in each job (e.g. .venv/bin/activate)."}
    )
    slurm_qos: str = field(default="normal", metadata={"help": "executor slurm: quality of service."})

    def check_executor(self) -> None:
        if self.tasks < 1:
            raise ConfigError(f"tasks must be >= 1, got {self.tasks}")
        if self.executor == "slurm" and not self.slurm_partition:
            raise ConfigError("executor slurm needs slurm_partition")


class StageFailed(RuntimeError):
    pass


def make_executor(args: ExecutorArguments, pipeline: list, tasks: int, logs: str, job_name: str, depends=None,
                  slurm_logs: str | None = None, preload: str | None = None):
    """The datatrove executor of one stage. `preload`: a module the local executor's fork server imports once, so its
    workers (forks of it) do not each import it again."""
    workers = min(args.workers, tasks) if args.workers > 0 else -1
    if args.executor == "local":
        from datatrove.executor import LocalPipelineExecutor

        if preload:
            import multiprocess

            multiprocess.get_context("forkserver").set_forkserver_preload(["__main__", preload])
        return LocalPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logs)
    if args.executor == "ray":
        from datatrove.executor import RayPipelineExecutor

        return RayPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logs,
                                   cpus_per_task=args.ray_cpus_per_task)
    from datatrove.executor import SlurmPipelineExecutor

    return SlurmPipelineExecutor(
        pipeline, tasks=tasks, workers=workers, logging_dir=logs, depends=depends, job_name=job_name,
        partition=args.slurm_partition, time=args.slurm_time, cpus_per_task=args.slurm_cpus_per_task,
        mem_per_cpu_gb=args.slurm_mem_per_cpu_gb, venv_path=args.slurm_venv_path, qos=args.slurm_qos,
        slurm_logs_folder=slurm_logs,
    )


def init_ray(args: ExecutorArguments) -> None:
    import ray

    if not ray.is_initialized():  # "local": without an address Ray would join a cluster found on the machine,
        # where passing num_cpus is an error
        ray.init(address=args.ray_address or "local", num_cpus=None if args.ray_address else max(args.workers, 1)
                 if args.workers > 0 else None)


def run_stage(executor, tasks: int, what: str, logs: str) -> float:
    """Run one local or Ray stage; its wall time in seconds, or StageFailed naming the tasks that did not complete."""
    start = time.perf_counter()
    executor.run()
    seconds = round(time.perf_counter() - start, 2)
    incomplete = executor.get_incomplete_ranks(range(tasks))
    if incomplete:
        raise StageFailed(f"stage {what}: tasks {incomplete} did not complete; see {logs}/logs")
    return seconds

"""Tasks: the ``Task`` type, task families sampled from a PRNG key, samplers from plain functions, and helpers."""

from jmeta.tasks.sampler import check_sampler, sampler
from jmeta.tasks.sinusoid import Sinusoids, SinusoidSampler, sinusoid_functions, sinusoid_tasks
from jmeta.tasks.task import Task, num_tasks, split_points

__all__ = [
    "SinusoidSampler",
    "Sinusoids",
    "Task",
    "check_sampler",
    "num_tasks",
    "sampler",
    "sinusoid_functions",
    "sinusoid_tasks",
    "split_points",
]

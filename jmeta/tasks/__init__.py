"""Tasks: the ``Task`` type, task families sampled from a PRNG key, and helpers."""

from jmeta.tasks.sinusoid import Sinusoids, SinusoidSampler, sinusoid_functions, sinusoid_tasks
from jmeta.tasks.task import Task, num_tasks, split_points

__all__ = ["SinusoidSampler", "Sinusoids", "Task", "num_tasks", "sinusoid_functions", "sinusoid_tasks", "split_points"]

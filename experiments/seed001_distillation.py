"""Source 001: knowledge distillation for image recognition, then deployment. A MAML Conv4 teacher (64
filters) is meta-trained on Omniglot 5-way 1-shot; a Conv4 student with 16 filters is meta-trained (MAML
inner loop) to match the teacher's adapted query predictions at ``temperature``, with ``hard_weight`` of
the loss on the true labels (``jmeta.systems.distill``); the student, adapted to a test task, is exported
(``workdir/student``) and reloaded with ``jmeta.export.load_predictor``.

``steps``: meta-steps of the teacher and again of the student; ``meta_batch``: tasks per meta-step;
``eval_tasks``: test tasks, the same for both.

Run: jmeta train experiments/seed001_distillation.py --workdir runs/seed001_distillation
"""

from jmeta.experiment import few_shot_config


def get_config():
    config = few_shot_config("omniglot", "maml", ways=5, shots=1)
    config.program = "distill"
    config.data_dir = "../shared/data/omniglot"
    config.student_hidden, config.temperature, config.hard_weight = 16, 4.0, 0.1
    config.meta_batch, config.steps, config.eval_tasks = 16, 2000, 600
    config.published_source = "none: the article reports no figures"
    return config

"""Source 001: knowledge distillation for image recognition, then deployment, measured as Hinton et al. (2015)
measure it: a student trained on a teacher's soft targets beside the same student trained on the labels alone.

The teacher, the image MLP 784-512-256-10 (``ImageMLP000``; 64 inputs on 8x8 digits), is trained on all training
digits by SGD with momentum 0.9. Each of ``eval_tasks`` tasks is a scarce training set of ``shots`` digits per class
(the regime where soft targets help: Hinton et al. sec. 6); on it a small student MLP (``student_hidden`` ReLU units,
then 10 logits) is trained twice from the same initialisation for ``steps`` full-batch Adam steps: on the teacher's
soft targets at ``temperature`` with ``hard_weight`` of the loss on the true labels (``jmeta.systems.distill``), and
on the labels alone. Both are scored on every test digit; ``results.json`` holds the paired gain (``comparison``),
the ``sweep`` of ``(temperature, hard_weight)`` pairs given, and the export of one distilled student
(``workdir/student``, reloaded with ``jmeta.export.load_predictor``).

Offline default: scikit-learn's 8x8 digits (80/20 split within each class); ``task=mnist-sample`` (5,000 real MNIST
digits, ``pip install 'jmeta[mnist]'``) or ``task=mnist`` (TFDS).

Run: jmeta train experiments/seed001_distillation.py --workdir runs/seed001_distillation
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.program, config.task, config.data_dir = "distill", "digits", ""
    config.lr, config.teacher_steps, config.meta_batch = 0.01, 2000, 64  # the teacher, as seed000
    config.shots, config.student_hidden, config.student_lr = 5, (32,), 0.01
    config.temperature, config.hard_weight = 4.0, 0.1
    config.sweep = ()  # (temperature, hard_weight) pairs also run, e.g. "sweep=((1,0.5),(1,0.1),(8,0.5))"
    config.steps, config.seed, config.eval_tasks = 300, 0, 20
    config.published, config.published_source = {}, "none: the article reports no figures"
    return config

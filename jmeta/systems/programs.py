"""The programs that ``jmeta train`` runs when a config sets ``program``: the source systems
(docs/source-systems.md) that are not one meta-learner trained episode by episode.

=================  ===========================================  ==============================================
program            function                                     what it runs (source article)
=================  ===========================================  ==============================================
``supervised``     :func:`jmeta.systems.supervised.program`     SGD on a class data set, test accuracy (000)
``distill``        :func:`jmeta.systems.distill.program`        a MAML Conv4 teacher distilled into a student (001)
``multitask``      :func:`jmeta.systems.multitask.program`      a shared trunk, heads fitted on new tasks (002)
``selection``      :func:`jmeta.systems.selection.program`      a meta-model choosing among base learners (003)
``gmm``            :func:`jmeta.systems.gmm.program`            EM for a Gaussian mixture beside scikit-learn (003)
``maml-mlp``       :func:`jmeta.systems.maml_mlp.program`       MAML, MAML++ or Reptile with the article's MLP (004)
=================  ===========================================  ==============================================

A program is ``program(config, workdir) -> results`` (:data:`jmeta.systems.common.Program`); jmeta's own
are registered here with :func:`jmeta.register_program`, as a user's are. The required config keys
``steps``, ``seed``, ``meta_batch`` and ``eval_tasks`` keep their roles where a program has them (optimiser
steps, seed, batch size, test tasks); each program's docstring says which.

Example::

    >>> from jmeta.experiment import load_config
    >>> config = load_config("experiments/seed003_gmm.py", ["steps=3"])  # doctest: +SKIP
    >>> run_program(config, "runs/gmm")["protocol"]["task"]              # doctest: +SKIP
    'iris'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ml_collections

from jmeta.lock import workdir_lock
from jmeta.registry import PROGRAMS, register_program
from jmeta.systems import distill, gmm, maml_mlp, multitask, selection, supervised
from jmeta.train import prepare_workdir, write_atomically

for _name, _program in {
    "supervised": supervised.program,
    "distill": distill.program,
    "multitask": multitask.program,
    "selection": selection.program,
    "gmm": gmm.program,
    "maml-mlp": maml_mlp.program,
}.items():
    register_program(_name, _program)


def run_program(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Runs the program ``config.program`` (registered in ``jmeta.registry.PROGRAMS``), writes
    ``workdir/config.json`` and
    ``workdir/results.json``, and returns the results.

    Raises ValueError naming the registered programs when ``config.program`` is not one of them, and
    when ``workdir`` holds a run with another config.

    Example::

        >>> from jmeta.experiment import load_config
        >>> config = load_config("experiments/seed003_selection.py", ["steps=3"])  # doctest: +SKIP
        >>> run_program(config, "runs/selection")["results"]["selector"]           # doctest: +SKIP
    """
    if config.program not in PROGRAMS:
        raise ValueError(PROGRAMS.unknown(config.program))
    program = PROGRAMS[config.program].builder
    with workdir_lock(workdir):  # one run at a time writes to a workdir, as jmeta.train's
        workdir = prepare_workdir(workdir, config)
        results = program(config, workdir)
        write_atomically(workdir / "results.json", json.dumps(results, indent=2) + "\n")
    return results

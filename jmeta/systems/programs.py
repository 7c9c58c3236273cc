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

A program is ``program(config, workdir) -> results`` (:data:`jmeta.systems.common.Program`); add your own
with :func:`register_program`. The required config keys ``steps``, ``seed``, ``meta_batch`` and
``eval_tasks`` keep their roles where a program has them (optimiser steps, seed, batch size, test tasks);
each program's docstring says which.

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

from jmeta.systems import distill, gmm, maml_mlp, multitask, selection, supervised
from jmeta.systems.common import Program
from jmeta.train import prepare_workdir, write_atomically
from jmeta.validation import one_of

PROGRAMS: dict[str, Program] = {
    "supervised": supervised.program,
    "distill": distill.program,
    "multitask": multitask.program,
    "selection": selection.program,
    "gmm": gmm.program,
    "maml-mlp": maml_mlp.program,
}


def register_program(name: str, program: Program) -> None:
    """Makes ``program(config, workdir) -> results`` runnable by configs that set ``program=name``.

    ``results`` must be shaped as :func:`jmeta.systems.common.report` returns them, so that
    ``jmeta.train.format_results`` prints them.

    Example::

        >>> register_program("supervised", PROGRAMS["supervised"])  # the same function again: allowed
        >>> register_program("supervised", print)
        Traceback (most recent call last):
        ValueError: program 'supervised' is already registered to program; choose another name.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string; got {name!r}.")
    if not callable(program):
        raise TypeError(f"program must be callable as program(config, workdir); got {type(program).__name__}.")
    if name in PROGRAMS and PROGRAMS[name] is not program:
        raise ValueError(
            f"program {name!r} is already registered to {PROGRAMS[name].__name__}; choose another name."
        )
    PROGRAMS[name] = program


def run_program(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Runs the program ``config.program`` (one of :data:`PROGRAMS`), writes ``workdir/config.json`` and
    ``workdir/results.json``, and returns the results.

    Raises ValueError naming the registered programs when ``config.program`` is not one of them, and
    when ``workdir`` holds a run with another config.

    Example::

        >>> from jmeta.experiment import load_config
        >>> config = load_config("experiments/seed003_selection.py", ["steps=3"])  # doctest: +SKIP
        >>> run_program(config, "runs/selection")["results"]["selector"]           # doctest: +SKIP
    """
    program = PROGRAMS[one_of("program", config.program, tuple(PROGRAMS))]
    workdir = prepare_workdir(workdir, config)
    results = program(config, workdir)
    write_atomically(workdir / "results.json", json.dumps(results, indent=2) + "\n")
    return results

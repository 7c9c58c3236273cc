"""The source systems (docs/source-systems.md): one module per system, holding its library API and the
program that ``jmeta train`` runs for it, side by side.

================================  ===========================================================================
module                            system (source article)
================================  ===========================================================================
:mod:`jmeta.systems.supervised`   supervised image classification with the article's MLP (000)
:mod:`jmeta.systems.distill`      knowledge distillation of a few-shot teacher into a student (001)
:mod:`jmeta.systems.multitask`    a shared trunk trained on many tasks, new heads for new tasks (002)
:mod:`jmeta.systems.selection`    algorithm selection among base learners (003)
:mod:`jmeta.systems.gmm`          EM for Gaussian mixtures (003)
:mod:`jmeta.systems.maml_mlp`     MAML, MAML++ and Reptile with the article's MLP (004)
:mod:`jmeta.systems.common`       what the programs share (results, protocol, compiled training steps)
:mod:`jmeta.systems.programs`     the registry ``program name -> function`` that ``jmeta train`` dispatches on
================================  ===========================================================================

The systems sit above the core: they use learners, models, data and ``jmeta.train``'s loop, and nothing
below them imports them. Importing this package loads none of them.
"""

"""Deep-learning uncertainty (MC dropout, deep ensembles, heteroscedastic networks),
returning the same :class:`uqrecon.result.Result` as the Bayesian methods."""

from .data import Batch, Task, ct_task, measure, mri_task, simulate, with_insert
from .networks import LearnedGradientDescent, UNet, gradient_step_size
from .train import (TrainState, default_optimizer, held_out_loss, load_checkpoint,
                    save_checkpoint, train)
from .uq import (METHODS, Predictions, deterministic_predictions, ensemble_predictions,
                 entropy_split, evaluate, mc_dropout_predictions, ood_ratio, predict,
                 qoi_variance, to_result, variance_split)


__all__ = [
    "Batch", "Task", "ct_task", "measure", "mri_task", "simulate", "with_insert",
    "LearnedGradientDescent", "UNet", "gradient_step_size",
    "TrainState", "default_optimizer", "held_out_loss", "load_checkpoint",
    "save_checkpoint", "train",
    "METHODS", "Predictions", "deterministic_predictions", "ensemble_predictions",
    "entropy_split", "evaluate", "mc_dropout_predictions", "ood_ratio", "predict",
    "qoi_variance", "to_result", "variance_split",
]

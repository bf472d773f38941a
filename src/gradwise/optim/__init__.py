"""Optimizers as composable gradient transforms, behind one torch.optim-compatible adapter.

Transforms (``init(params) -> state``, ``update(updates, state, params) -> (updates,
state)``) compose with :func:`chain`; :class:`Optimizer` runs any transform as a
``torch.optim.Optimizer``; the named optimizers (:class:`SGD`, :class:`Adam`, ...) are
``Optimizer`` subclasses whose update is one chain.
"""

from gradwise.optim._adadelta import Adadelta, scale_by_adadelta
from gradwise.optim._adagrad import Adagrad, scale_by_adagrad
from gradwise.optim._adam import Adam, AdamW, scale_by_adam
from gradwise.optim._clipping import clip, clip_by_global_norm, clip_by_norm
from gradwise.optim._lamb import LAMB
from gradwise.optim._lars import LARS
from gradwise.optim._learning_rate import scale, scale_by_learning_rate
from gradwise.optim._nadam import NAdam, scale_by_nadam
from gradwise.optim._newton import Newton
from gradwise.optim._noise import add_noise
from gradwise.optim._optimizer import Implementation, Optimizer, next_step_lr
from gradwise.optim._radam import RAdam, scale_by_radam
from gradwise.optim._rmsprop import RMSprop, scale_by_rms
from gradwise.optim._sgd import SGD, scale_by_momentum
from gradwise.optim._sign import OneBitSGD, SignSGD, scale_by_one_bit, scale_by_sign
from gradwise.optim._swats import SWATS
from gradwise.optim._transform import (
    GradientTransform,
    State,
    chain,
    identity,
    masked,
    stateless,
)
from gradwise.optim._trust_ratio import scale_by_trust_ratio
from gradwise.optim._weight_decay import (
    WeightDecayMask,
    add_decayed_weights,
    add_l2,
    weight_decay_mask,
)

__all__ = [
    "Adadelta",
    "Adagrad",
    "NAdam",
    "Newton",
    "RAdam",
    "RMSprop",
    "scale_by_adadelta",
    "scale_by_adagrad",
    "scale_by_nadam",
    "scale_by_radam",
    "scale_by_rms",
    "SGD",
    "Adam",
    "AdamW",
    "GradientTransform",
    "Implementation",
    "LAMB",
    "LARS",
    "OneBitSGD",
    "Optimizer",
    "SWATS",
    "SignSGD",
    "State",
    "WeightDecayMask",
    "add_decayed_weights",
    "add_l2",
    "add_noise",
    "chain",
    "clip",
    "clip_by_global_norm",
    "clip_by_norm",
    "identity",
    "masked",
    "next_step_lr",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_momentum",
    "scale_by_one_bit",
    "scale_by_sign",
    "scale_by_trust_ratio",
    "stateless",
    "weight_decay_mask",
]

"""Train your own nn.Module with gradwise, without the CLI: a residual MLP on 8x8 digits.

Data, preprocessing fitted on the training split, a custom model and its initialization,
optimizer and schedule, early stopping, a callback, then gradwise.Trainer runs the loop.

Run: .venv/bin/python examples/train_custom_module.py [--epochs 30] [--quiet]
"""

import argparse
import dataclasses

import torch
from torch import nn

import gradwise
from gradwise import init, optim
from gradwise.data import load_dataset
from gradwise.preprocess import Standardize
from gradwise.regularize import EarlyStopping
from gradwise.schedules import ScheduleLR, cosine_decay, linear_warmup
from gradwise.train import Callback, TrainState

parser = argparse.ArgumentParser(description="Train a residual MLP on digits with gradwise.")
parser.add_argument("--epochs", type=int, default=30, help="passes over the training split")
parser.add_argument("--quiet", action="store_true", help="print only the final result")
args = parser.parse_args()
# A 64-wide model on batches of 64 is too small to share among threads: on a 2-core machine
# one thread ran 3 epochs (with start-up) in 12.3 s, torch's default of 2 threads in 16.7 s.
torch.set_num_threads(1)

# Data: 1,797 images (1, 8, 8) with raw values 0..16, split train/validation/test.
# Statistics come from the training split only, then the same transform goes everywhere.
data = load_dataset("digits", seed=0)
scaler = Standardize(per="channel").fit(data.train.inputs)
standardized = {
    split: dataclasses.replace(dataset, inputs=scaler.transform(dataset.inputs))
    for split, dataset in data.splits().items()
}
data = dataclasses.replace(data, **standardized)


# The model: any nn.Module that maps a batch of inputs to class scores.
class ResidualBlock(nn.Module):  # x + W2 relu(W1 layernorm(x)), a pre-norm residual block
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.expand = nn.Linear(width, 2 * width)
        self.activation = nn.ReLU()  # a module, so initialize() sees it and uses gain sqrt(2)
        self.project = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.activation(self.expand(self.norm(x))))


class ResidualMLP(nn.Module):
    def __init__(self, in_features: int, width: int, depth: int, num_classes: int) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(in_features, width))
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(depth)])
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, 1, 8, 8)
        return self.head(self.blocks(self.embed(x)))  # (batch, classes)


model = ResidualMLP(in_features=64, width=64, depth=2, num_classes=data.output_size)
layers = init.initialize(model, "he_normal", generator=0)  # same seed, same model

# Optimizer and schedule: 2 epochs of linear warmup, then a cosine decay to zero.
batch_size, peak_lr = 64, 3e-3
steps_per_epoch = -(-len(data.train) // batch_size)
warmup_steps = min(2 * steps_per_epoch, args.epochs * steps_per_epoch - 1)
decay_steps = args.epochs * steps_per_epoch - warmup_steps
optimizer = optim.AdamW(model.parameters(), lr=peak_lr, weight_decay=1e-2)
scheduler = ScheduleLR(optimizer, linear_warmup(cosine_decay(peak_lr, decay_steps), warmup_steps))

# Stop when the validation loss has not improved for 5 epochs; keep the best weights.
early_stopping = EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)


class PrintEpoch(Callback):  # one line per epoch, from the metrics the trainer just computed
    def on_epoch_end(self, state: TrainState) -> None:
        m = state.metrics
        print(
            f"epoch {state.epoch:3d}  step {state.step:4d}  lr {state.lr:.2e}  "
            f"train loss {m['train_loss']:.3f} acc {m['train_accuracy']:.3f}  "
            f"val loss {m['val_loss']:.3f} acc {m['val_accuracy']:.3f}"
        )


if not args.quiet:
    print(data.description)
    print(f"initialized {len(layers)} layers: " + ", ".join(layer.name for layer in layers))

trainer = gradwise.Trainer(
    model, optimizer, data, loss="cross_entropy", batch_size=batch_size, epochs=args.epochs,
    scheduler=scheduler, early_stopping=early_stopping,
    callbacks=[] if args.quiet else [PrintEpoch()], seed=0, progress=False,
)  # fmt: skip
result = trainer.fit()

print(f"{result.status} after {result.epochs} epochs ({result.steps} steps)")
print(f"test accuracy: {result.test['test_accuracy']:.4f}")

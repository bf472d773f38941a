"""Suite-wide settings."""

import torch

# This project's machines have two cores shared with other work; a second intra-op thread
# makes small ops wait on a busy core (measured: 30 us -> 7.6 ms for a fused Adam step).
torch.set_num_threads(1)

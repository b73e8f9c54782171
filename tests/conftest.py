"""The tests run on one torch thread: on a shared machine, spinning OpenMP threads of several
processes wait on each other. The entry points take torch's default unless `--threads N` says otherwise."""

import torch

torch.set_num_threads(1)

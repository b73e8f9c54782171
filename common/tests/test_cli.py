import argparse

import pytest
import torch

from common.cli import add_threads_flag, set_threads


def test_threads_flag_default_keeps_torch_default():
    ap = argparse.ArgumentParser()
    add_threads_flag(ap)
    before = torch.get_num_threads()
    try:
        set_threads(ap.parse_args([]).threads)
        assert torch.get_num_threads() == before
        set_threads(ap.parse_args(["--threads", "1"]).threads)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("n", [-1, 1.5, True])
def test_threads_bad_count_names_the_flag(n):
    with pytest.raises(ValueError, match=r"^--threads: expected an int >= 0 \(0: torch's default\), got"):
        set_threads(n)

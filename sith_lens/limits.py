"""Limits shared by the API, the command line and the explorer. Torch-free, so that the command
line can check its flags without importing torch.

Example:
    >>> MAX_MULTIPLIER
    100.0
"""

#: The largest |multiplier| an edit accepts: beyond it, a head's rebuilt output dwarfs the residual
#: stream (and at ~1e19 overflows float32), so the "edit" only breaks the model.
MAX_MULTIPLIER = 100.0

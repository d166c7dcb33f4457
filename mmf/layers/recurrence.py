"""The MLGRU recurrence (E6): h_t = f_t * h_{t-1} + i_t, elementwise per channel.

A `step` advances one token; a `scan` runs the step over T tokens. The recurrence is linear in h
(no tanh between states, no hidden-to-hidden matrix): that is what makes it MatMul-free and
parallel-scannable. Shapes: f, i (B, T, D); h0 and each h_t (B, D).
"""
import numpy as np


def recurrence_step(h_prev, f_t, i_t):
    """One token: (B, D) -> (B, D)."""
    return f_t * h_prev + i_t


def scan_forward(f, i, h0):
    """All T tokens from the carried state h0: returns every h_t, (B, T, D)."""
    h = np.empty_like(i)                                             # (B, T, D)
    h_prev = h0                                                      # (B, D)
    for t in range(i.shape[1]):
        h_prev = h[:, t] = recurrence_step(h_prev, f[:, t], i[:, t])
    return h


def scan_backward(dh, f, h, h0):
    """Reverse-time pass. dh (B, T, D) is the loss gradient w.r.t. each h_t from outside the scan.

    The gradient flowing into h_t is its own dh_t plus what h_{t+1} = f_{t+1} h_t + ... passes back,
    f_{t+1} * carry. Returns (df, di, dh0).
    """
    df = np.empty_like(f)
    di = np.empty_like(dh)
    carry = np.zeros_like(h0)                                        # (B, D) gradient w.r.t. h_t from the future
    for t in reversed(range(dh.shape[1])):
        carry = carry + dh[:, t]                                     # total gradient on h_t
        h_prev = h[:, t - 1] if t > 0 else h0
        di[:, t] = carry                                             # dh_t/di_t = 1
        df[:, t] = carry * h_prev                                    # dh_t/df_t = h_{t-1}
        carry = carry * f[:, t]                                      # dh_t/dh_{t-1} = f_t
    return df, di, carry

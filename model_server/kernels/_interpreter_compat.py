"""Makes Triton 3.6's interpreter work with NumPy >= 2.4 (the pinned 2.4.6), for TRITON_INTERPRET=1 runs.

The interpreter turns a scalar tensor into a Python int with int(array) for loop bounds (range(lo, hi) with
run-time bounds), but its scalars are arrays of shape (1,), which NumPy 2.4 no longer converts. Re-register
__index__ with .item(). A no-op outside interpreter mode and when Triton already behaves.
"""

from __future__ import annotations

import triton

_done = False


def apply() -> None:
    global _done
    if _done or not triton.knobs.runtime.interpret:
        return
    from triton.runtime import interpreter as ti

    original = getattr(ti, "_patch_lang_tensor", None)
    if original is None:  # a Triton version with another layout: leave it alone
        _done = True
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    ti._patch_lang_tensor = patched
    _done = True

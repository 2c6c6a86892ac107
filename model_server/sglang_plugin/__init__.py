"""SGLang external model package for LoopCoder-V2 (PLT) and IQuest LoopCoder v1 (docs/sglang.md).

SGLang imports every module of the package named by ``SGLANG_EXTERNAL_MODEL_PACKAGE`` and registers
each ``EntryClass`` under its class name, which must equal the checkpoint's ``architectures[0]``:

- ``model``: the SGLang model classes (imports SGLang; pinned version in pyproject's ``sglang`` extra);
- ``weights``: checkpoint name -> SGLang parameter and shard, tensor-parallel head slices (no SGLang);
- ``launch``: the ``python -m sglang.launch_server`` command ``loopcoder serve --engine sglang`` runs.

Importing this package registers the two config classes with transformers' AutoConfig, so SGLang
resolves ``model_type`` iquestpltcoder / iquestloopcoder in any process that imports it.
"""
from .. import plt  # noqa: F401  (AutoConfig registration side effect)

PACKAGE = __name__  # the value of SGLANG_EXTERNAL_MODEL_PACKAGE

"""sleepsound.models: compact sleep-sound classifiers over log-mel input ``[B, C_in, 64, T]``.

Build models by name through the registry::

    from sleepsound.models import create_model, list_models
    model = create_model("tinycnn_cbam", n_classes=3, r=8, k=3)

Registered: ``tinycnn``, ``crnn``, ``tinycnn_cbam``. Deployment figures (parameters, fp32
size, MACs, single-thread latency) live in :mod:`sleepsound.models.profile`.
"""

from . import cbam, crnn, tinycnn  # noqa: F401  (imports register the models)
from .cbam import CBAM
from .crnn import CRNN
from .registry import create_model, create_model_from_config, list_models, register_model
from .tinycnn import TinyCNN, conv_stack

__all__ = [
    "CBAM",
    "CRNN",
    "TinyCNN",
    "conv_stack",
    "create_model",
    "create_model_from_config",
    "list_models",
    "register_model",
]

"""Stage ``quantize@i``: W^Q from W^sp (eq. 3-5) and the sparse layer that ``finetune@i`` freezes.
"""

from __future__ import annotations

import logging
from pathlib import Path

from qsenn_core.io import write_json
from qsenn_core.metrics import features_per_class, n_used_features
from qsenn_core.params import Params
from qsenn_core.quantize import quantize, refit_bias, sparsify_top, weights_to_keep
from qsenn_core.sparse_layer import SparseLayer, save_sparse_layer
from qsenn_core.steps.sparse_files import layer_inputs, read_solution

log = logging.getLogger(__name__)


def quantize_solution(params: Params, solution_path: Path, features_path: Path,
                      selection_path: Path, prev: str, out_layer: Path,
                      out_metrics: Path) -> dict[str, float]:
    """W^Q from W^sp (eq. 3-5; or the n_w largest float weights when ``quant.enabled`` is
    false), a refitted bias, and the sparse layer file for fine-tuning."""
    solution = read_solution(solution_path)
    weight = solution["weight"]
    n_weights = weights_to_keep(weight, params.quant.n_per_class * params.n_classes)
    if params.quant.enabled:
        new_weight = quantize(weight, n_weights, params.quant.levels)
    else:
        new_weight = sparsify_top(weight, n_weights)
    inputs = layer_inputs(features_path, selection_path, prev)
    standardized = (inputs.train - solution["mean"]) / solution["std"]
    bias = refit_bias(standardized, new_weight.double(), inputs.labels, init=solution["bias"])
    alpha = float(new_weight.abs().max())
    layer = SparseLayer(solution["selection"], new_weight, bias, solution["mean"],
                        solution["std"], alpha=alpha)
    save_sparse_layer(out_layer, layer)
    logits = standardized @ new_weight.double().T + bias.double()
    metrics = {
        "alpha": alpha,
        "nonzeros": int((new_weight != 0).sum()),
        "features_per_class": features_per_class(new_weight),
        "n_features": n_used_features(new_weight),
        "train_accuracy": 100.0 * float((logits.argmax(1) == inputs.labels).double().mean()),
    }
    write_json(out_metrics, metrics)
    log.info("quantized layer: alpha %.4g, %d nonzeros, %.2f features/class",
             alpha, metrics["nonzeros"], metrics["features_per_class"])
    return metrics

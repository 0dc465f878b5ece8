"""The one table of metric columns: every key the evaluate stages write to ``metrics/<model>.json``.

Each :class:`MetricColumn` says what a key means (its label and unit, which direction is better,
where the paper defines it) and where it is shown: the report's metrics table
(:mod:`qsenn_core.report`) and the experiment comparison (:mod:`qsenn_core.compare`) both take
their columns from :data:`METRIC_COLUMNS`, and ``tests/test_registries.py`` checks that the keys
the evaluate stage writes are exactly these. Plain data, no torch: the report and compare tools
import it.

The order is the report's: the paper's Table 1 (accuracy, diversity@5, dependence gamma,
alignment r), Table 4 (binary features) and the sparsity of Table 5 (features per class, total
features), then the supplement's extras.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

#: ``better`` of a metric where higher values are better (↑ in the paper's tables).
HIGHER = +1
#: ``better`` of a metric where lower values are better (↓).
LOWER = -1
#: ``better`` of a metric that does not rank models on its own.
NEITHER = 0


@dataclass(frozen=True)
class MetricColumn:
    """One metric of ``metrics/<model>.json`` and how tables show it."""

    #: The JSON key the evaluate stage writes.
    key: str
    #: Column header (the paper's name of the metric).
    label: str
    #: ``"%"`` where the value is in percent (as the paper reports it), ``""`` for a count or an
    #: unbounded score.
    unit: str
    #: :data:`HIGHER`, :data:`LOWER` or :data:`NEITHER`.
    better: int
    #: Decimals where a table fixes them (compare's Markdown).
    digits: int
    #: Where the paper defines it.
    source: str
    #: A column of the report's metrics table (the paper's headline metrics).
    in_report: bool = False
    #: A column of the experiment comparison (``python -m qsenn_core.compare``).
    in_compare: bool = False

    @property
    def arrow(self) -> str:
        """``↑`` / ``↓`` as in the paper's table headers, ``""`` when no direction is better."""
        return {HIGHER: "↑", LOWER: "↓"}.get(self.better, "")


_COLUMNS: tuple[MetricColumn, ...] = (
    MetricColumn("accuracy", "Accuracy", "%", HIGHER, 1, "Fidelity: test accuracy (Table 1)",
                 in_report=True, in_compare=True),
    MetricColumn("diversity_at_5", "diversity@5", "%", HIGHER, 1,
                 "Diversity: diversity@5 on the test images (eq. 6)",
                 in_report=True, in_compare=True),
    MetricColumn("dependence", "Dependence γ", "%", LOWER, 1,
                 "Grounding: dependence gamma of the training images on their raw features "
                 "(eq. 7-8)", in_report=True, in_compare=True),
    MetricColumn("alignment_r", "Alignment r", "", HIGHER, 3,
                 "Grounding: alignment r with the attributes (eq. 9-10); unbounded",
                 in_report=True, in_compare=True),
    # Table 4 marks binary features with an up arrow, but the supplement shows that the dense
    # model's few binary features are class detectors: the fraction alone ranks no model.
    MetricColumn("binary_features", "Binary features", "%", NEITHER, 1,
                 "features whose mean shift finds exactly 2 clusters (Table 4)",
                 in_report=True, in_compare=True),
    MetricColumn("features_per_class", "Features / class", "", LOWER, 2,
                 "n_wc, nonzero weights per class (Table 5)", in_report=True, in_compare=True),
    MetricColumn("n_features", "Total features", "", LOWER, 0,
                 "n_f*, features with a nonzero weight (Table 5)", in_report=True,
                 in_compare=True),
    MetricColumn("correlation_at_5", "Correlation@5", "%", LOWER, 1,
                 "mean |Pearson r| of each class's 5 top features (supplement, Figure 12)",
                 in_compare=True),
    MetricColumn("assignments_changed", "Assignments changed", "%", NEITHER, 1,
                 "new feature-class assignments since the previous iteration (supplement, "
                 "Figure 8)", in_compare=True),
    MetricColumn("diversity_at_5_k_nonzero", "diversity@5 (classes with 5 weights)", "%",
                 HIGHER, 1, "diversity@5 over the test images whose predicted class has >= 5 "
                 "nonzero weights, as the authors' code averages (eq. 6)"),
    MetricColumn("dependence_test", "Dependence γ (test)", "%", LOWER, 1,
                 "dependence gamma of the test images on their raw features (eq. 7-8)"),
    MetricColumn("dependence_std_test", "Dependence γ (test, standardized)", "%", LOWER, 1,
                 "dependence gamma of the test images on the standardized features the sparse "
                 "layer receives (eq. 7-8)"),
    MetricColumn("binary_features_strict", "Binary features (strict)", "%", NEITHER, 1,
                 "binary features whose clusters both exceed a class's training images "
                 "(supplement, Table 10)"),
)

#: Metric key -> its column, in display order (read-only).
METRIC_COLUMNS: MappingProxyType[str, MetricColumn] = MappingProxyType(
    {c.key: c for c in _COLUMNS})

#: The report's metrics table, in order.
REPORT_COLUMNS: tuple[MetricColumn, ...] = tuple(c for c in _COLUMNS if c.in_report)
#: The comparison table's metric columns, in order.
COMPARE_COLUMNS: tuple[MetricColumn, ...] = tuple(c for c in _COLUMNS if c.in_compare)

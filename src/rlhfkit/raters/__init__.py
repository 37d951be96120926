"""The raters: how well they agree, how far to trust them, and what their choices reward.

- :mod:`rlhfkit.raters.quality`: agreement (percent, Cohen's, Fleiss' kappa, Krippendorff's
  alpha) per item, rater and label; gold accuracy; Dawid-Skene trust and aggregated labels;
  flags for raters far below the pool. Works on a table of (item_id, rater_id, label).
- :mod:`rlhfkit.raters.bias`: bias profiles, a logistic regression of the choice on attribute
  differences between the two responses (length, personality scorers) with a position effect
  and confidence intervals, for the pool and for each rater.

Example::

    >>> from rlhfkit.raters import audit_agreement, audit_bias
    >>> audit_agreement("testset-v1.json")["fleiss_kappa"]  # doctest: +SKIP
    0.864...
"""

from rlhfkit.raters.bias import BiasProfile, audit_bias, bias_profile, bias_profiles, fit_bias
from rlhfkit.raters.quality import (
    Annotations,
    agreement_report,
    annotation_table,
    annotations_from_examples,
    annotations_from_pairs,
    audit_agreement,
    dawid_skene,
    load_annotations,
)

__all__ = [
    "Annotations",
    "BiasProfile",
    "agreement_report",
    "annotation_table",
    "annotations_from_examples",
    "annotations_from_pairs",
    "audit_agreement",
    "audit_bias",
    "bias_profile",
    "bias_profiles",
    "dawid_skene",
    "fit_bias",
    "load_annotations",
]

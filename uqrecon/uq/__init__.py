"""Summaries, evaluation and trust: diagnostics, metrics, comparison with a reference;
calibration over replicated experiments and conformal guarantees; bootstrap UQ for any
reconstruction map; tests of whether a structure is real; downstream ROI risk.

Metrics and comparisons know results and arrays, never how a result was made; the
replicate-based tools (calibration, bootstrap, structure tests) run methods of the layers
below through their public entry points, imported when called.
"""

from uqrecon.uq.compare import Comparison, ComparisonTable, compare, compare_table, same_model
from uqrecon.diagnostics import (
    ConvergenceWarning,
    WelfordState,
    add_diagnostics,
    check_convergence,
    diagnose,
    ess,
    ess_bulk,
    ess_tail,
    rhat,
    summarize,
    welford_combine,
    welford_finalize,
    welford_init,
    welford_merge,
    welford_update,
)
from uqrecon.uq.bootstrap import (
    FBPReconstruction,
    ImageGroup,
    LinearReconstruction,
    equivariant_bootstrap,
    gaussian_mean_reconstruction,
    image_group,
    naive_bootstrap,
    response_matrix,
)
from uqrecon.uq.calibration import (
    CalibrationReport,
    Replicates,
    calibration_figure,
    calibration_table,
    exact_gaussian_method,
    method_from_name,
    replicated_calibration,
    run_replicates,
    scale_result,
    summarize_calibration,
)
from uqrecon.uq.conformal import (
    RCPS,
    ConformalCheck,
    ErrorBound,
    conformity_scores,
    fit_error_bound,
    fit_rcps,
    hoeffding_bentkus_bound,
    min_calibration_size,
    rcps_max_empirical_risk,
    repeated_split_check,
    uncovered_fraction,
)
from uqrecon.uq.lesions import (
    CASES,
    PlantedLesion,
    hallucinated_candidate,
    planted_lesion,
    planted_lesion_set,
)
from uqrecon.uq.risk import (
    Quantity,
    QuantityPosterior,
    abstain,
    area_above,
    auroc,
    double_sampling,
    evaluate_abstention,
    evaluate_quantity,
    reliability_score,
    ring_around,
    roi_contrast,
    roi_mean,
    roi_posterior,
    threshold_for_error,
    threshold_for_flag_rate,
)
from uqrecon.uq.structure import (
    BUQOTest,
    SamplingTest,
    Structure,
    buqo_test,
    contrast,
    disc_structure,
    hpd_tau,
    minimize_potential_over_absent_set,
    sampling_test,
    structure_from_mask,
)
from uqrecon.uq.metrics import (
    calibration_curve,
    coverage,
    credible_interval,
    error_uncertainty_correlation,
    gaussian_kl,
    gaussian_w2,
    mse_ball_coverage,
    psnr,
    relative_error,
    sparsification,
    ssim,
    w1_empirical,
    w1_gaussian,
    w1_gaussian_empirical,
)

__all__ = [
    "Comparison", "ComparisonTable", "compare", "compare_table", "same_model",
    "ConvergenceWarning", "WelfordState", "add_diagnostics", "check_convergence", "diagnose", "ess",
    "ess_bulk", "ess_tail", "rhat", "summarize", "welford_combine", "welford_finalize",
    "welford_init", "welford_merge", "welford_update",
    "calibration_curve", "coverage", "credible_interval", "error_uncertainty_correlation",
    "gaussian_kl", "gaussian_w2", "mse_ball_coverage", "psnr", "relative_error",
    "sparsification", "ssim", "w1_empirical", "w1_gaussian", "w1_gaussian_empirical",
    "CalibrationReport", "Replicates", "calibration_figure", "calibration_table",
    "exact_gaussian_method", "method_from_name", "replicated_calibration", "run_replicates",
    "scale_result", "summarize_calibration",
    "RCPS", "ConformalCheck", "ErrorBound", "conformity_scores", "fit_error_bound", "fit_rcps",
    "hoeffding_bentkus_bound", "min_calibration_size", "rcps_max_empirical_risk",
    "repeated_split_check", "uncovered_fraction",
    "FBPReconstruction", "ImageGroup", "LinearReconstruction", "equivariant_bootstrap",
    "gaussian_mean_reconstruction", "image_group", "naive_bootstrap", "response_matrix",
    "Quantity", "QuantityPosterior", "abstain", "area_above", "auroc", "double_sampling",
    "evaluate_abstention", "evaluate_quantity", "reliability_score", "ring_around",
    "roi_contrast", "roi_mean", "roi_posterior", "threshold_for_error",
    "threshold_for_flag_rate",
    "CASES", "PlantedLesion", "hallucinated_candidate", "planted_lesion", "planted_lesion_set",
    "BUQOTest", "SamplingTest", "Structure", "buqo_test", "contrast", "disc_structure",
    "hpd_tau", "minimize_potential_over_absent_set", "sampling_test", "structure_from_mask",
]

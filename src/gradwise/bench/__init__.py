"""Optimizer benchmarks: Schaul et al.'s unit tests and the classic surfaces with known minima.

:func:`score_optimizers` runs any gradwise optimizer or chain on the unit tests of Schaul,
Antonoglou & Silver (2014) (:data:`UNIT_TESTS`: prototype shapes x noise x scale x
dimension x drift) and scores it against the best-tuned plain SGD, as a table and a coloured
grid. :func:`surface_benchmark` counts the steps each optimizer, with a tuned learning
rate, needs to reach a known minimum of a 2-D test surface; :func:`performance_profiles`
summarizes such steps-to-target over problems as Dolan & More's profiles with AlgoPerf's
area score. matplotlib is imported only
when a grid is drawn.
"""

from gradwise.bench._deepobs import (
    QUADRATIC_DEEP_LEARNING_RATES,
    QUADRATIC_DEEP_PUBLISHED,
    QuadraticDeep,
    QuadraticDeepResults,
    QuadraticDeepRun,
    make_quadratic_deep,
    quadratic_deep_benchmark,
    random_rotation,
    run_quadratic_deep,
)
from gradwise.bench._mnist1d import (
    MNIST1D_MODELS,
    MNIST1D_PUBLISHED,
    Mnist1dResult,
    Mnist1dResults,
    mnist1d_baselines,
)
from gradwise.bench._profiles import (
    ALGOPERF_TAU_MAX,
    PROFILE_TAUS,
    PerformanceProfiles,
    performance_profiles,
    quadratic_deep_steps,
    surface_steps,
)
from gradwise.bench._scoring import (
    OPTIMIZER_NAMES,
    SOLVED_FRACTION,
    UNIT_TEST_LEARNING_RATES,
    LearningRateFactory,
    OptimizerFactory,
    OptimizerSpec,
    Tuned,
    UnitTestScores,
    run_unit_test,
    score_optimizers,
    tuned_optimizers,
)
from gradwise.bench._surfaces import (
    BENCHMARK_SURFACES,
    SADDLE_ESCAPE,
    SURFACE_LEARNING_RATES,
    SurfaceResults,
    SurfaceRun,
    ill_conditioned_quadratic,
    surface_benchmark,
)
from gradwise.bench._unit_tests import (
    MASK_PROBABILITY,
    NOISES,
    SHAPES,
    UNIT_TEST_NAMES,
    UNIT_TESTS,
    Noise,
    Shape,
    UnitTest,
    get_unit_test,
    make_unit_test,
)

__all__ = [
    "MNIST1D_MODELS",
    "MNIST1D_PUBLISHED",
    "Mnist1dResult",
    "Mnist1dResults",
    "mnist1d_baselines",
    "QUADRATIC_DEEP_LEARNING_RATES",
    "QUADRATIC_DEEP_PUBLISHED",
    "QuadraticDeep",
    "QuadraticDeepResults",
    "QuadraticDeepRun",
    "make_quadratic_deep",
    "quadratic_deep_benchmark",
    "random_rotation",
    "run_quadratic_deep",
    "ALGOPERF_TAU_MAX",
    "PROFILE_TAUS",
    "PerformanceProfiles",
    "performance_profiles",
    "quadratic_deep_steps",
    "surface_steps",
    "OPTIMIZER_NAMES",
    "tuned_optimizers",
    "BENCHMARK_SURFACES",
    "SADDLE_ESCAPE",
    "SURFACE_LEARNING_RATES",
    "SurfaceResults",
    "SurfaceRun",
    "ill_conditioned_quadratic",
    "surface_benchmark",
    "MASK_PROBABILITY",
    "NOISES",
    "SHAPES",
    "SOLVED_FRACTION",
    "UNIT_TESTS",
    "UNIT_TEST_LEARNING_RATES",
    "UNIT_TEST_NAMES",
    "LearningRateFactory",
    "Noise",
    "OptimizerFactory",
    "OptimizerSpec",
    "Shape",
    "Tuned",
    "UnitTest",
    "UnitTestScores",
    "get_unit_test",
    "make_unit_test",
    "run_unit_test",
    "score_optimizers",
]

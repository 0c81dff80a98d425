"""One default bundle and one TF backend for all codec test modules (tracing the subgraphs costs
seconds; every module re-tracing them would cost tens)."""

import functools


@functools.lru_cache(maxsize=1)
def bundle_and_backend():
    from runtime.backends import get_backend
    from runtime.bundle import untrained_bundle

    # A fixed untrained model: these tests check the codec's mechanics (exactness, robustness,
    # sizes), which must not change when a different trained model is shipped.
    bundle = untrained_bundle()
    return bundle, get_backend("tf", bundle)

"""Settings every test shares.

Hypothesis runs a CI-sized budget by default (the suite is meant to stay quick on a 2-core box);
`HYPOTHESIS_PROFILE=thorough` runs ten times the examples, for a deeper look before a release.
No per-example deadline: CI boxes are noisy, and speed is measured by bench/, never by tests.
"""

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=40, deadline=None)
settings.register_profile("thorough", max_examples=400, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

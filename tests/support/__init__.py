"""What the test suites share, defined once: the CI switch and outside-tool checks (:mod:`.env`), a fake
clock (:mod:`.clocks`), a certificate factory (:mod:`.pki`) and the server fixtures (:mod:`.servers`)."""

"""Fuzz targets for the decoders that read untrusted bytes: the SCEP envelope and the OCSP request.

Every target takes one ``bytes`` input and returns normally whenever the code under test answered
with one of its documented outcomes; any other exception is a finding. :mod:`fuzz.run` drives the
targets with atheris (libFuzzer); ``tests/fuzz`` drives them with hypothesis on every ``make test``.
"""
